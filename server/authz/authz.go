// Package authz is the collector's one authorization table: every gRPC
// method and every web console route, each listed once with who may call
// it. The gRPC interceptors and the web handlers both consult it, and what
// it does not list is refused.
package authz

import "slices"

// Principals: the three operator roles, an enrolled terminal (client
// certificate), and anyone (no credentials).
const (
	Admin    = "admin"
	Helpdesk = "helpdesk"
	Auditor  = "auditor"
	Terminal = "terminal"
	Anyone   = "anyone"
)

// Roles are the operator roles.
var Roles = []string{Admin, Helpdesk, Auditor}

var (
	all        = []string{Admin, Helpdesk, Auditor}
	admin      = []string{Admin}
	adminDesk  = []string{Admin, Helpdesk}
	adminAudit = []string{Admin, Auditor}
	terminal   = []string{Terminal}
	anyone     = []string{Anyone}
)

const (
	agentSvc = "/mnguard.v1.AgentService/"
	adminSvc = "/mnguard.v1.AdminService/"
)

// rpcs maps a gRPC full method name to who may call it.
var rpcs = map[string][]string{
	agentSvc + "Enroll":        anyone, // the enrollment token is in the request
	agentSvc + "Renew":         terminal,
	agentSvc + "Report":        terminal,
	agentSvc + "Subscribe":     terminal,
	agentSvc + "VerifyLogin":   terminal,
	adminSvc + "GetServerInfo": all,

	adminSvc + "ListTerminals":  all,
	adminSvc + "GetTerminal":    all,
	adminSvc + "RevokeTerminal": admin,

	adminSvc + "CreateEnrollmentToken": admin,
	adminSvc + "ListEnrollmentTokens":  adminAudit,
	adminSvc + "ListEvents":            all,

	adminSvc + "EnrollUser":            admin,
	adminSvc + "ConfirmUser":           adminDesk,
	adminSvc + "ListUsers":             all,
	adminSvc + "GetUser":               all,
	adminSvc + "UnlockUser":            adminDesk,
	adminSvc + "ResetUser":             admin,
	adminSvc + "DeleteUser":            admin,
	adminSvc + "ImportUsers":           admin,
	adminSvc + "ImportTokens":          admin,
	adminSvc + "ListTokens":            admin,
	adminSvc + "AssignToken":           admin,
	adminSvc + "ResyncUser":            adminDesk,
	adminSvc + "NewRecoveryCodes":      admin,
	adminSvc + "IssueOfflineLoginCode": adminDesk,

	adminSvc + "IssueExemption":            adminDesk,
	adminSvc + "RevokeExemption":           adminDesk,
	adminSvc + "ListExemptions":            all,
	adminSvc + "IssueOfflineExemptionCode": adminDesk,

	adminSvc + "AddOperator":         admin,
	adminSvc + "ListOperators":       adminAudit,
	adminSvc + "GetOperator":         adminAudit,
	adminSvc + "DisableOperator":     admin,
	adminSvc + "EnableOperator":      admin,
	adminSvc + "DeleteOperator":      admin,
	adminSvc + "ResetOperatorTotp":   admin,
	adminSvc + "SetOperatorRole":     admin,
	adminSvc + "SetOperatorPassword": admin,
	adminSvc + "UnlockOperator":      admin,
	adminSvc + "CreateOperatorToken": admin,
	adminSvc + "RevokeOperatorToken": admin,

	adminSvc + "ListAudit":   adminAudit,
	adminSvc + "VerifyAudit": adminAudit,

	adminSvc + "GetSelfInspectionReport": adminAudit,

	// Every operator may read the network policy (the helpdesk answers
	// calls about blocked traffic); only admins change it.
	adminSvc + "GetNetworkPolicy": all,
	adminSvc + "SetNetworkPolicy": admin,
}

// routes maps a web route, as net/http.ServeMux patterns name it, to who
// may use it.
var routes = map[string][]string{
	"GET /healthz":          anyone,
	"GET /metrics":          anyone,
	"GET /static/{file...}": anyone,
	"GET /signin":           anyone,
	"POST /signin":          anyone,
	"POST /signout":         all,

	"GET /{$}":                    all,
	"GET /terminals":              all,
	"GET /terminals.csv":          all,
	"GET /terminals/{id}":         all,
	"POST /terminals/{id}/revoke": admin,

	"GET /exemptions":              all,
	"GET /exemptions/new":          adminDesk,
	"POST /exemptions":             adminDesk,
	"GET /exemptions/offline":      adminDesk,
	"POST /exemptions/offline":     adminDesk,
	"GET /exemptions/{id}":         all,
	"GET /exemptions/{id}/live":    all,
	"POST /exemptions/{id}/revoke": adminDesk,

	"GET /users":                        all,
	"POST /users":                       admin,
	"GET /users/{name}":                 all,
	"POST /users/{name}/unlock":         adminDesk,
	"POST /users/{name}/reset":          admin,
	"POST /users/{name}/resync":         adminDesk,
	"POST /users/{name}/recovery-codes": admin,
	"POST /users/{name}/delete":         admin,
	"GET /users/offline-code":           adminDesk,
	"POST /users/offline-code":          adminDesk,

	"GET /tokens":  adminAudit,
	"POST /tokens": admin,

	"GET /events":     all,
	"GET /events.csv": all,

	"GET /audit": adminAudit,

	"GET /reports/self-inspection": adminAudit,

	"GET /network-policy":  all,
	"POST /network-policy": admin,

	"GET /operators":                     admin,
	"POST /operators":                    admin,
	"GET /operators/{name}":              admin,
	"POST /operators/{name}/disable":     admin,
	"POST /operators/{name}/enable":      admin,
	"POST /operators/{name}/delete":      admin,
	"POST /operators/{name}/reset-totp":  admin,
	"POST /operators/{name}/role":        admin,
	"POST /operators/{name}/password":    admin,
	"POST /operators/{name}/unlock":      admin,
	"POST /operators/{name}/tokens":      admin,
	"POST /operators/tokens/{id}/revoke": admin,

	"GET /account":           all,
	"POST /account/language": all,
}

// RPC returns who may call the gRPC method; ok is false for a method the
// table does not list, which nobody may call.
func RPC(method string) (who []string, ok bool) {
	who, ok = rpcs[method]
	return slices.Clone(who), ok
}

// ListedRPC reports whether the table lists the gRPC method.
func ListedRPC(method string) bool {
	_, ok := rpcs[method]
	return ok
}

// AllowsRPC reports whether principal may call the gRPC method.
func AllowsRPC(method, principal string) bool {
	return slices.Contains(rpcs[method], principal)
}

// Route returns who may use the web route; ok is false for a route the
// table does not list, which nobody may use.
func Route(pattern string) (who []string, ok bool) {
	who, ok = routes[pattern]
	return slices.Clone(who), ok
}

// AllowsRoute reports whether principal may use the web route.
func AllowsRoute(pattern, principal string) bool {
	return slices.Contains(routes[pattern], principal)
}

// Routes lists every web route of the table, sorted.
func Routes() []string {
	out := make([]string, 0, len(routes))
	for r := range routes {
		out = append(out, r)
	}
	slices.Sort(out)
	return out
}

// RPCs lists every gRPC method of the table, sorted.
func RPCs() []string {
	out := make([]string, 0, len(rpcs))
	for m := range rpcs {
		out = append(out, m)
	}
	slices.Sort(out)
	return out
}
