package web

import (
	"encoding/base64"
	"html/template"
	"net/http"
	"net/url"
	"strings"
	"time"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"github.com/mnguard/mnguard/server/logins"
	qrcode "github.com/skip2/go-qrcode"
)

type usersView struct {
	Users []*mnguardv1.User
	// Enrolled is set right after an enrollment: its secret, shown once.
	Enrolled *secretView
}

// secretView is a TOTP secret shown once: QR code, otpauth URL, base32
// secret and recovery codes.
type secretView struct {
	Name          string
	URL           string
	Secret        string
	QR            template.URL
	RecoveryCodes []string
}

// qrDataURL is the QR code of text as a PNG data: URL (the page's only
// image source besides the collector itself).
func qrDataURL(text string) (template.URL, error) {
	png, err := qrcode.Encode(text, qrcode.Medium, 240)
	if err != nil {
		return "", err
	}
	return template.URL("data:image/png;base64," + base64.StdEncoding.EncodeToString(png)), nil
}

func newSecretView(name, otpURL, secret string, codes []string) (*secretView, error) {
	qr, err := qrDataURL(otpURL)
	if err != nil {
		return nil, err
	}
	return &secretView{Name: name, URL: otpURL, Secret: secret, QR: qr, RecoveryCodes: codes}, nil
}

func (s *Server) users(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	resp, err := listAllUsers(c.apiCtx(r.Context()), s.cfg.Admin)
	if err != nil {
		return err
	}
	return s.render(w, c, http.StatusOK, "users", usersView{Users: resp.GetUsers()})
}

func validUserName(name string) error {
	if err := logins.ValidateName(name); err != nil {
		return bad("error.bad_user", name)
	}
	return nil
}

func (s *Server) enrollUser(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	name := strings.TrimSpace(r.PostForm.Get("name"))
	if err := validUserName(name); err != nil {
		return err
	}
	en, err := s.cfg.Admin.EnrollUser(c.apiCtx(r.Context()), &mnguardv1.EnrollUserRequest{Name: name})
	if err != nil {
		return err
	}
	sv, err := newSecretView(name, en.GetOtpauthUrl(), en.GetSecret(), en.GetRecoveryCodes())
	if err != nil {
		return err
	}
	list, err := listAllUsers(c.apiCtx(r.Context()), s.cfg.Admin)
	if err != nil {
		return err
	}
	return s.render(w, c, http.StatusOK, "users", usersView{Users: list.GetUsers(), Enrolled: sv})
}

type userView struct {
	U *mnguardv1.User
	// Shown once after a reset or new recovery codes.
	Secret        *secretView
	RecoveryCodes []string
}

func (s *Server) user(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	name := r.PathValue("name")
	if err := validUserName(name); err != nil {
		return err
	}
	resp, err := s.cfg.Admin.GetUser(c.apiCtx(r.Context()), &mnguardv1.GetUserRequest{Name: name})
	if err != nil {
		return err
	}
	return s.render(w, c, http.StatusOK, "user", userView{U: resp.GetUser()})
}

func (s *Server) userDone(w http.ResponseWriter, r *http.Request, name, done string) error {
	http.Redirect(w, r, "/users/"+url.PathEscape(name)+"?done="+done, http.StatusSeeOther)
	return nil
}

func (s *Server) unlockUser(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	name := r.PathValue("name")
	if err := validUserName(name); err != nil {
		return err
	}
	if _, err := s.cfg.Admin.UnlockUser(c.apiCtx(r.Context()), &mnguardv1.UnlockUserRequest{Name: name}); err != nil {
		return err
	}
	return s.userDone(w, r, name, "user_unlocked")
}

func (s *Server) resetUser(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	name := r.PathValue("name")
	if err := validUserName(name); err != nil {
		return err
	}
	en, err := s.cfg.Admin.ResetUser(c.apiCtx(r.Context()), &mnguardv1.ResetUserRequest{Name: name})
	if err != nil {
		return err
	}
	sv, err := newSecretView(name, en.GetOtpauthUrl(), en.GetSecret(), en.GetRecoveryCodes())
	if err != nil {
		return err
	}
	return s.render(w, c, http.StatusOK, "user", userView{U: en.GetUser(), Secret: sv})
}

func (s *Server) resyncUser(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	name := r.PathValue("name")
	if err := validUserName(name); err != nil {
		return err
	}
	f := r.PostForm
	if _, err := s.cfg.Admin.ResyncUser(c.apiCtx(r.Context()), &mnguardv1.ResyncUserRequest{
		Name: name, Code1: strings.TrimSpace(f.Get("code1")), Code2: strings.TrimSpace(f.Get("code2")),
	}); err != nil {
		return err
	}
	return s.userDone(w, r, name, "user_resynced")
}

func (s *Server) recoveryCodes(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	name := r.PathValue("name")
	if err := validUserName(name); err != nil {
		return err
	}
	resp, err := s.cfg.Admin.NewRecoveryCodes(c.apiCtx(r.Context()), &mnguardv1.NewRecoveryCodesRequest{Name: name})
	if err != nil {
		return err
	}
	return s.render(w, c, http.StatusOK, "user", userView{U: resp.GetUser(), RecoveryCodes: resp.GetRecoveryCodes()})
}

func (s *Server) deleteUser(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	name := r.PathValue("name")
	if err := validUserName(name); err != nil {
		return err
	}
	if _, err := s.cfg.Admin.DeleteUser(c.apiCtx(r.Context()), &mnguardv1.DeleteUserRequest{Name: name}); err != nil {
		return err
	}
	http.Redirect(w, r, "/users?done=user_deleted", http.StatusSeeOther)
	return nil
}

type offlineLoginView struct {
	Terminal, User, Challenge string
	// Code is the offline login code, shown once, and until when it works.
	Code       string
	ValidUntil time.Time
}

func (s *Server) offlineLoginForm(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	q := r.URL.Query()
	return s.render(w, c, http.StatusOK, "user_offline", offlineLoginView{Terminal: q.Get("terminal"), User: q.Get("user")})
}

func (s *Server) offlineLogin(w http.ResponseWriter, r *http.Request, c *reqCtx) error {
	f := r.PostForm
	v := offlineLoginView{Terminal: strings.TrimSpace(f.Get("terminal")), User: strings.TrimSpace(f.Get("user")), Challenge: strings.TrimSpace(f.Get("challenge"))}
	if err := validTerminalID(v.Terminal); err != nil {
		return err
	}
	if err := validUserName(v.User); err != nil {
		return err
	}
	resp, err := s.cfg.Admin.IssueOfflineLoginCode(c.apiCtx(r.Context()), &mnguardv1.IssueOfflineLoginCodeRequest{
		TerminalId: v.Terminal, User: v.User, Challenge: v.Challenge,
	})
	if err != nil {
		return err
	}
	v.Code, v.ValidUntil = resp.GetCode(), resp.GetValidUntil().AsTime()
	return s.render(w, c, http.StatusOK, "user_offline", v)
}
