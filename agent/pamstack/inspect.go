package pamstack

import (
	"fmt"
	"io/fs"
	"os"
	"runtime"
	"strings"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
)

// DefaultServices are the PAM services whose logins must ask for the second factor:
// the console, the display managers, OpenSSH and sudo.
var DefaultServices = []string{"login", "gdm-password", "lightdm", "sshd", "sudo"}

// goos is runtime.GOOS; tests change it.
var goos = runtime.GOOS

// Inspect judges the auth stacks of services under root ("/" on the running system).
func Inspect(root string, services []string) []*mnguardv1.PamService {
	return InspectFS(os.DirFS(root), services)
}

// InspectFS is Inspect on a file system whose root stands for "/".
func InspectFS(fsys fs.FS, services []string) []*mnguardv1.PamService {
	out := make([]*mnguardv1.PamService, 0, len(services))
	for _, svc := range services {
		out = append(out, Evaluate(fsys, svc).Proto())
	}
	return out
}

// Proto returns the result as the posture message.
func (r Result) Proto() *mnguardv1.PamService {
	return &mnguardv1.PamService{
		Name:        r.Service,
		Present:     r.Present,
		MfaRequired: r.Required,
		ModuleLine:  r.ModuleLine,
		Reason:      r.Reason,
	}
}

// Posture says whether logins on this machine really need the second factor: the
// agent serves socket (serving), at least one of services is present, and every
// present service's auth stack requires pam_mnguard.so asking that socket. The reason
// names the first problem. root is the file system root, "/" on the running system.
func Posture(root string, services []string, socket string, serving bool) *mnguardv1.MfaPosture {
	return PostureFS(os.DirFS(root), services, socket, serving)
}

// PostureFS is Posture on a file system whose root stands for "/".
func PostureFS(fsys fs.FS, services []string, socket string, serving bool) *mnguardv1.MfaPosture {
	p := &mnguardv1.MfaPosture{Socket: socket, SocketServing: serving}
	if goos == "windows" {
		p.Reason = "Windows logins do not go through PAM; the second factor is not enforced"
		return p
	}
	var problems []string
	if !serving {
		problems = append(problems, fmt.Sprintf("the agent does not serve %s", socket))
	}
	present := 0
	for _, svc := range services {
		r := Evaluate(fsys, svc)
		p.Services = append(p.Services, r.Proto())
		if !r.Present {
			continue
		}
		present++
		switch {
		case !r.Required:
			problems = append(problems, fmt.Sprintf("%s: %s", svc, r.Reason))
		case r.Socket != socket:
			problems = append(problems, fmt.Sprintf("%s: %s asks %s, the agent serves %s", svc, ModuleName, r.Socket, socket))
		}
	}
	if present == 0 {
		problems = append(problems, fmt.Sprintf("none of the PAM services %s is present", strings.Join(services, ", ")))
	}
	if len(problems) == 0 {
		p.Enforced = true
		return p
	}
	p.Reason = problems[0]
	return p
}
