//go:build ignore

// The line above keeps the go tool away from this file: the package has no
// cgo, and this module is built by cc alone (see the Makefile and pam_test).

/*
 * pam_mnguard.so — the TOTP second factor of mnguard for Linux logins.
 *
 * A thin C client of the mnguard agent, in the style of SSSD's pam_sss: no Go
 * runtime (it hangs sshd and breaks on fork), no threads, no state between
 * calls. It tells the agent that a login begins and shows what the agent
 * says (when the server cannot be reached: an offline challenge for the
 * helpdesk), prompts "Verification code: " through the PAM conversation,
 * asks the agent whether the code is valid and maps the answer to a PAM
 * result. The agent checks the peer's credentials and asks the server; TOTP
 * seeds never leave the server. Recovery codes and helpdesk offline codes
 * use the same prompt.
 *
 * Usage (auth only):
 *   auth required pam_mnguard.so [socket=/run/mnguard/pam.sock] [timeout=15] [debug]
 *
 *   socket=PATH   absolute path of the agent's socket (default /run/mnguard/pam.sock).
 *   timeout=SECS  total time for talking to the agent — connects, requests and
 *                 answers of both exchanges; the time the user spends at the
 *                 prompt does not count — 1..60 (default 15, above the agent's
 *                 own 10 s; out-of-range values are clamped, unparsable ones
 *                 fall back to 15).
 *   debug         log the protocol steps (never the code) through pam_syslog.
 *   Unknown arguments are logged and ignored.
 *
 * There is deliberately NO "nullok": a user without a second factor cannot
 * pass this module. Whether a user must enroll first is the server's decision,
 * not the login machine's.
 *
 * Management groups:
 *   auth     pam_sm_authenticate does the work; pam_sm_setcred returns
 *            PAM_SUCCESS (there are no credentials to establish).
 *   account, session, password: not provided on purpose. The module only
 *            belongs in "auth"; listing it elsewhere is a configuration error,
 *            and libpam then fails that line closed (PAM_MODULE_UNKNOWN,
 *            "unable to resolve symbol" in the log) instead of silently
 *            ignoring it.
 *
 * sshd needs "KbdInteractiveAuthentication yes" (ChallengeResponseAuthentication
 * on older OpenSSH) and "UsePAM yes" to show the prompt; with public-key logins
 * add "AuthenticationMethods publickey,keyboard-interactive" to require both.
 *
 * Trust: before each connection the socket must be a socket (lstat, not
 * followed) owned by root, in a real directory owned by root and writable by
 * nobody else; after connecting the peer (SO_PEERCRED) must run as root.
 * Anything else is PAM_AUTHINFO_UNAVAIL and nothing is sent.
 *
 * Protocol: two exchanges, each on its own connection with one request and
 * one response. Each message is a frame: u32 big-endian length N
 * (1 <= N <= 4096), then N payload bytes.
 *   begin:    u8 version=1, u8 type=2, then user and service, each as u16
 *             big-endian length + bytes. Sent before the prompt.
 *   verify:   u8 version=1, u8 type=1, then user, service and code, each as
 *             u16 big-endian length + bytes.
 *   response: u8 version=1, u8 result, u16 big-endian length + message.
 *   results:  0 accepted       -> PAM_SUCCESS (to begin: go on and prompt)
 *             1 rejected       -> PAM_AUTH_ERR
 *             2 locked         -> PAM_MAXTRIES ("do not retry": the account
 *                                 is locked until the helpdesk unlocks it;
 *                                 the user is told so)
 *             3 unavailable    -> PAM_AUTHINFO_UNAVAIL
 *             4 bad request    -> PAM_AUTH_ERR
 *             5 not permitted  -> PAM_PERM_DENIED
 *             anything malformed, unknown or timed out -> PAM_AUTHINFO_UNAVAIL
 * The message of an accepted begin, if any, is shown as information before
 * the prompt; a begin answered otherwise ends the login without a prompt.
 * The message of a verify answer is shown when the code is not accepted (as
 * information when it is). Messages never contain the code; the code is
 * never logged and is wiped from memory once sent.
 *
 * Build:
 *   cc -std=gnu11 -Wall -Wextra -Werror -fPIC -O2 -D_FORTIFY_SOURCE=2 \
 *      -fstack-protector-strong -shared -o pam_mnguard.so pam_mnguard.c -lpam
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>

#define PAM_SM_AUTH
#include <security/pam_modules.h>
#include <security/pam_ext.h>

#define MNG_DEFAULT_SOCKET "/run/mnguard/pam.sock"
#define MNG_DEFAULT_TIMEOUT 15
#define MNG_MIN_TIMEOUT 1
#define MNG_MAX_TIMEOUT 60
#define MNG_MAX_FRAME 4096
#define MNG_MAX_CODE 64
#define MNG_VERSION 1
#define MNG_TYPE_VERIFY 1
#define MNG_TYPE_BEGIN 2
#define MNG_PROMPT "Verification code: "
#define MNG_LOCKED_MSG "account locked: call the helpdesk"

enum {
	MNG_ACCEPTED = 0,
	MNG_REJECTED = 1,
	MNG_LOCKED = 2,
	MNG_UNAVAILABLE = 3,
	MNG_BAD_REQUEST = 4,
	MNG_NOT_PERMITTED = 5,
};

struct mng_opts {
	const char *socket;
	int timeout;
	int debug;
};

static void parse_args(pam_handle_t *pamh, int argc, const char **argv,
		       struct mng_opts *o)
{
	o->socket = MNG_DEFAULT_SOCKET;
	o->timeout = MNG_DEFAULT_TIMEOUT;
	o->debug = 0;
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i];
		if (a == NULL)
			continue;
		if (strcmp(a, "debug") == 0) {
			o->debug = 1;
		} else if (strncmp(a, "socket=", 7) == 0) {
			o->socket = a + 7;
		} else if (strncmp(a, "timeout=", 8) == 0) {
			char *end = NULL;
			errno = 0;
			long v = strtol(a + 8, &end, 10);
			if (errno != 0 || end == a + 8 || *end != '\0') {
				pam_syslog(pamh, LOG_ERR,
					   "bad argument %s; using timeout=%d",
					   a, MNG_DEFAULT_TIMEOUT);
				o->timeout = MNG_DEFAULT_TIMEOUT;
			} else if (v < MNG_MIN_TIMEOUT || v > MNG_MAX_TIMEOUT) {
				o->timeout = v < MNG_MIN_TIMEOUT ? MNG_MIN_TIMEOUT
								 : MNG_MAX_TIMEOUT;
				pam_syslog(pamh, LOG_ERR,
					   "timeout out of range 1..60 in %s; using %d",
					   a, o->timeout);
			} else {
				o->timeout = (int)v;
			}
		} else {
			pam_syslog(pamh, LOG_ERR, "unknown argument ignored: %s", a);
		}
	}
}

/* Checks that path is a root-owned socket in a root-owned directory that
 * nobody else can write. Returns 0 when trusted. */
static int check_socket(pam_handle_t *pamh, const char *path)
{
	struct stat st;
	size_t len = strlen(path);
	char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];

	if (len == 0 || path[0] != '/' || len >= sizeof(dir)) {
		pam_syslog(pamh, LOG_ERR,
			   "socket path must be absolute and shorter than %zu bytes",
			   sizeof(dir));
		return -1;
	}
	if (lstat(path, &st) != 0) {
		pam_syslog(pamh, LOG_ERR, "agent socket %s: %m (is mnguard-agent running?)",
			   path);
		return -1;
	}
	if (!S_ISSOCK(st.st_mode)) {
		pam_syslog(pamh, LOG_ERR, "%s is not a socket", path);
		return -1;
	}
	if (st.st_uid != 0) {
		pam_syslog(pamh, LOG_ERR, "agent socket %s is owned by uid %u, not root",
			   path, (unsigned)st.st_uid);
		return -1;
	}

	memcpy(dir, path, len + 1);
	char *slash = strrchr(dir, '/');
	if (slash == dir)
		dir[1] = '\0';
	else
		*slash = '\0';
	if (lstat(dir, &st) != 0) {
		pam_syslog(pamh, LOG_ERR, "socket directory %s: %m", dir);
		return -1;
	}
	if (!S_ISDIR(st.st_mode) || st.st_uid != 0 ||
	    (st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
		pam_syslog(pamh, LOG_ERR,
			   "socket directory %s must be a directory owned by root and "
			   "not writable by group or others (uid %u, mode %04o)",
			   dir, (unsigned)st.st_uid, (unsigned)(st.st_mode & 07777));
		return -1;
	}
	return 0;
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* I/O helpers: 0 on success, -1 with errno set (ETIMEDOUT when the deadline
 * passed), -2 when the peer closed the connection early. */

/* Sets SO_RCVTIMEO and SO_SNDTIMEO to what is left before deadline. Returns
 * -1 (errno ETIMEDOUT) when the deadline has passed. */
static int set_remaining(int fd, int64_t deadline)
{
	int64_t left = deadline - now_ms();
	if (left <= 0) {
		errno = ETIMEDOUT;
		return -1;
	}
	struct timeval tv = { .tv_sec = left / 1000,
			      .tv_usec = (left % 1000) * 1000 };
	if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) != 0)
		return -1;
	return 0;
}

static int write_all(int fd, const unsigned char *p, size_t n, int64_t deadline)
{
	while (n > 0) {
		if (set_remaining(fd, deadline) != 0)
			return -1;
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				errno = ETIMEDOUT;
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static int read_all(int fd, unsigned char *p, size_t n, int64_t deadline)
{
	while (n > 0) {
		if (set_remaining(fd, deadline) != 0)
			return -1;
		ssize_t r = recv(fd, p, n, 0);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				errno = ETIMEDOUT;
			return -1;
		}
		if (r == 0)
			return -2; /* the peer closed before a whole frame */
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

static int read_answer(pam_handle_t *pamh, int fd, unsigned char *p, size_t n,
		       int64_t deadline)
{
	int r = read_all(fd, p, n, deadline);
	if (r == -2)
		pam_syslog(pamh, LOG_ERR, "the agent closed the connection before a whole answer");
	else if (r != 0)
		pam_syslog(pamh, LOG_ERR, "reading the agent's answer: %m");
	return r;
}

static unsigned char *put_field(unsigned char *p, const char *s, size_t n)
{
	*p++ = (unsigned char)(n >> 8);
	*p++ = (unsigned char)n;
	if (n > 0)
		memcpy(p, s, n);
	return p + n;
}

/* Copies the agent's message for display, replacing control bytes. */
static void show_message(pam_handle_t *pamh, int style, const unsigned char *m,
			 size_t n, const char *fallback)
{
	char buf[MNG_MAX_FRAME + 1];
	size_t i;
	for (i = 0; i < n && i < MNG_MAX_FRAME; i++)
		buf[i] = (m[i] < 0x20 || m[i] == 0x7f) ? '?' : (char)m[i];
	buf[i] = '\0';
	const char *text = i > 0 ? buf : fallback;
	if (text == NULL)
		return;
	if (style == PAM_ERROR_MSG)
		(void)pam_error(pamh, "%s", text);
	else
		(void)pam_info(pamh, "%s", text);
}

/* Writes the frame header for a payload of n bytes at p. */
static void put_header(unsigned char *p, size_t n)
{
	p[0] = (unsigned char)(n >> 24);
	p[1] = (unsigned char)(n >> 16);
	p[2] = (unsigned char)(n >> 8);
	p[3] = (unsigned char)n;
}

/* One exchange with the agent, all before deadline: checks and connects to
 * the socket, checks that the peer is root, sends the frame req (reqlen
 * bytes, header included) and reads the answer into resp (MNG_MAX_FRAME
 * bytes). Returns 0 with *result and *mlen (the message is resp + 4), or -1
 * after logging why there is no valid answer. */
static int ask_agent(pam_handle_t *pamh, const struct mng_opts *o,
		     const char *what, const unsigned char *req, size_t reqlen,
		     int64_t deadline, unsigned char *resp, unsigned *result,
		     size_t *mlen)
{
	unsigned char hdr[4];
	int fd = -1;
	int rc = -1;

	if (check_socket(pamh, o->socket) != 0)
		return -1;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		pam_syslog(pamh, LOG_ERR, "socket: %m");
		return -1;
	}
	struct sockaddr_un sa;
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path, o->socket, strlen(o->socket) + 1); /* length checked */
	if (set_remaining(fd, deadline) != 0) {
		pam_syslog(pamh, LOG_ERR, "%s: no time left before connecting: %m", what);
		goto out;
	}
	if (o->debug)
		pam_syslog(pamh, LOG_DEBUG, "%s: connecting to %s (%lld ms left)", what,
			   o->socket, (long long)(deadline - now_ms()));
	for (;;) {
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			break;
		if (errno == EINTR)
			continue;
		pam_syslog(pamh, LOG_ERR, "cannot reach the agent at %s: %m", o->socket);
		goto out;
	}

	struct ucred cred;
	socklen_t credlen = sizeof(cred);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &credlen) != 0 ||
	    credlen != sizeof(cred) || cred.uid != 0) {
		pam_syslog(pamh, LOG_ERR, "the process behind %s does not run as root",
			   o->socket);
		goto out;
	}

	if (write_all(fd, req, reqlen, deadline) != 0) {
		pam_syslog(pamh, LOG_ERR, "%s: sending the request to the agent: %m", what);
		goto out;
	}
	if (o->debug)
		pam_syslog(pamh, LOG_DEBUG, "%s: request sent (%zu bytes), waiting for the agent",
			   what, reqlen);

	if (read_answer(pamh, fd, hdr, sizeof(hdr), deadline) != 0)
		goto out;
	uint32_t n = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 |
		     (uint32_t)hdr[2] << 8 | (uint32_t)hdr[3];
	if (n < 4 || n > MNG_MAX_FRAME) {
		pam_syslog(pamh, LOG_ERR, "malformed answer from the agent (frame length %u)",
			   (unsigned)n);
		goto out;
	}
	if (read_answer(pamh, fd, resp, n, deadline) != 0)
		goto out;
	size_t m = (size_t)resp[2] << 8 | resp[3];
	if (resp[0] != MNG_VERSION || m + 4 != n) {
		pam_syslog(pamh, LOG_ERR,
			   "malformed answer from the agent (version %u, length %u)",
			   (unsigned)resp[0], (unsigned)n);
		goto out;
	}
	*result = resp[1];
	*mlen = m;
	if (o->debug)
		pam_syslog(pamh, LOG_DEBUG, "%s: agent answered result %u", what, *result);
	rc = 0;
out:
	close(fd);
	return rc;
}

/* Maps an answer other than accepted to a PAM result and tells the user. */
static int refusal(pam_handle_t *pamh, unsigned result, const unsigned char *msg,
		   size_t mlen)
{
	switch (result) {
	case MNG_REJECTED:
		show_message(pamh, PAM_ERROR_MSG, msg, mlen, NULL);
		pam_syslog(pamh, LOG_NOTICE, "verification code rejected");
		return PAM_AUTH_ERR;
	case MNG_LOCKED:
		(void)pam_error(pamh, "%s", MNG_LOCKED_MSG);
		if (mlen > 0)
			show_message(pamh, PAM_ERROR_MSG, msg, mlen, NULL);
		pam_syslog(pamh, LOG_NOTICE, "account locked");
		return PAM_MAXTRIES;
	case MNG_UNAVAILABLE:
		show_message(pamh, PAM_ERROR_MSG, msg, mlen, NULL);
		pam_syslog(pamh, LOG_ERR, "agent cannot verify codes now");
		return PAM_AUTHINFO_UNAVAIL;
	case MNG_BAD_REQUEST:
		show_message(pamh, PAM_ERROR_MSG, msg, mlen, NULL);
		pam_syslog(pamh, LOG_NOTICE, "agent refused the request as malformed");
		return PAM_AUTH_ERR;
	case MNG_NOT_PERMITTED:
		show_message(pamh, PAM_ERROR_MSG, msg, mlen, NULL);
		pam_syslog(pamh, LOG_NOTICE, "agent does not permit this check");
		return PAM_PERM_DENIED;
	default:
		pam_syslog(pamh, LOG_ERR, "unknown result %u from the agent", result);
		return PAM_AUTHINFO_UNAVAIL;
	}
}

PAM_EXTERN int pam_sm_authenticate(pam_handle_t *pamh, int flags, int argc,
				   const char **argv)
{
	struct mng_opts o;
	const char *user = NULL;
	const void *item = NULL;
	const char *service = "";
	char *code = NULL;
	/* A request frame: header and the largest payload. */
	unsigned char req[4 + MNG_MAX_FRAME];
	size_t reqlen = 0;
	unsigned char resp[MNG_MAX_FRAME];
	unsigned result = 0;
	size_t mlen = 0;
	int ret;

	(void)flags;
	parse_args(pamh, argc, argv, &o);

	ret = pam_get_user(pamh, &user, NULL);
	if (ret != PAM_SUCCESS) {
		pam_syslog(pamh, LOG_ERR, "cannot determine the user: %s",
			   pam_strerror(pamh, ret));
		return ret == PAM_CONV_AGAIN ? PAM_INCOMPLETE : ret;
	}
	if (user == NULL || user[0] == '\0') {
		pam_syslog(pamh, LOG_ERR, "empty user name");
		return PAM_USER_UNKNOWN;
	}
	if (pam_get_item(pamh, PAM_SERVICE, &item) == PAM_SUCCESS && item != NULL)
		service = item;

	size_t ulen = strlen(user), slen = strlen(service);
	/* version, type, three u16 lengths, and the longest code we accept */
	if (ulen + slen + MNG_MAX_CODE + 8 > MNG_MAX_FRAME) {
		pam_syslog(pamh, LOG_ERR, "user or service name too long (%zu, %zu bytes)",
			   ulen, slen);
		return PAM_USER_UNKNOWN;
	}

	/* Both exchanges share one budget; the prompt is not counted. */
	int64_t budget = (int64_t)o.timeout * 1000;
	int64_t start = now_ms();

	/* begin: nobody is asked for a code that nobody can check. */
	size_t payload = 2 + 2 + ulen + 2 + slen;
	put_header(req, payload);
	req[4] = MNG_VERSION;
	req[5] = MNG_TYPE_BEGIN;
	unsigned char *p = put_field(req + 6, user, ulen);
	(void)put_field(p, service, slen);
	reqlen = 4 + payload;
	if (ask_agent(pamh, &o, "begin", req, reqlen, start + budget, resp, &result,
		      &mlen) != 0) {
		ret = PAM_AUTHINFO_UNAVAIL;
		goto out;
	}
	budget -= now_ms() - start;
	if (result != MNG_ACCEPTED) {
		ret = refusal(pamh, result, resp + 4, mlen);
		goto out;
	}
	if (mlen > 0)
		show_message(pamh, PAM_TEXT_INFO, resp + 4, mlen, NULL);
	if (budget <= 0) {
		pam_syslog(pamh, LOG_ERR, "no time left after begin (timeout=%d)", o.timeout);
		ret = PAM_AUTHINFO_UNAVAIL;
		goto out;
	}

	ret = pam_prompt(pamh, PAM_PROMPT_ECHO_OFF, &code, "%s", MNG_PROMPT);
	if (ret != PAM_SUCCESS) {
		if (code != NULL) {
			explicit_bzero(code, strlen(code));
			free(code);
		}
		pam_syslog(pamh, LOG_ERR, "conversation failed: %s",
			   pam_strerror(pamh, ret));
		ret = ret == PAM_CONV_AGAIN ? PAM_INCOMPLETE : PAM_CONV_ERR;
		goto out;
	}
	if (code == NULL) {
		pam_syslog(pamh, LOG_ERR, "conversation returned no answer");
		ret = PAM_CONV_ERR;
		goto out;
	}
	size_t clen = strlen(code);
	if (clen == 0 || clen > MNG_MAX_CODE) {
		explicit_bzero(code, clen);
		free(code);
		pam_syslog(pamh, LOG_NOTICE, "%s code refused locally (%zu bytes)",
			   clen == 0 ? "empty" : "overlong", clen);
		ret = PAM_AUTH_ERR;
		goto out;
	}

	/* verify */
	payload = 2 + 2 + ulen + 2 + slen + 2 + clen;
	put_header(req, payload);
	req[4] = MNG_VERSION;
	req[5] = MNG_TYPE_VERIFY;
	p = put_field(req + 6, user, ulen);
	p = put_field(p, service, slen);
	(void)put_field(p, code, clen);
	reqlen = 4 + payload;
	explicit_bzero(code, clen);
	free(code);
	code = NULL;

	int rc = ask_agent(pamh, &o, "verify", req, reqlen, now_ms() + budget, resp,
			   &result, &mlen);
	explicit_bzero(req, reqlen);
	if (rc != 0) {
		ret = PAM_AUTHINFO_UNAVAIL;
		goto out;
	}
	if (result == MNG_ACCEPTED) {
		ret = PAM_SUCCESS;
		if (mlen > 0)
			show_message(pamh, PAM_TEXT_INFO, resp + 4, mlen, NULL);
	} else {
		ret = refusal(pamh, result, resp + 4, mlen);
	}

out:
	explicit_bzero(req, sizeof(req));
	explicit_bzero(resp, sizeof(resp));
	return ret;
}

PAM_EXTERN int pam_sm_setcred(pam_handle_t *pamh, int flags, int argc,
			      const char **argv)
{
	(void)pamh;
	(void)flags;
	(void)argc;
	(void)argv;
	return PAM_SUCCESS;
}
