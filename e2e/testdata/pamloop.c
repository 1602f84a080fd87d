/*
 * pamloop: runs many PAM logins in one process, for the login latency
 * benchmark. Each stdin line is "USER CODE"; for each it calls
 * pam_start(SERVICE, USER) and pam_authenticate with a conversation that
 * answers every echo-off prompt with CODE, and prints
 * "RESULT NANOSECONDS" where RESULT is pam_authenticate's return value and
 * NANOSECONDS the time pam_authenticate took (CLOCK_MONOTONIC).
 *
 * Build: cc -o pamloop pamloop.c -lpam
 * Usage: pamloop SERVICE < logins
 */
#include <security/pam_appl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int conv(int n, const struct pam_message **msg, struct pam_response **resp, void *data)
{
	struct pam_response *r = calloc((size_t)n, sizeof(*r));
	if (r == NULL)
		return PAM_BUF_ERR;
	for (int i = 0; i < n; i++) {
		if (msg[i]->msg_style == PAM_PROMPT_ECHO_OFF || msg[i]->msg_style == PAM_PROMPT_ECHO_ON) {
			r[i].resp = strdup((const char *)data);
			if (r[i].resp == NULL) {
				for (int j = 0; j < i; j++)
					free(r[j].resp);
				free(r);
				return PAM_BUF_ERR;
			}
		}
	}
	*resp = r;
	return PAM_SUCCESS;
}

static long long now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv)
{
	char line[512], user[256], code[128];
	if (argc != 2) {
		fprintf(stderr, "usage: pamloop SERVICE < logins\n");
		return 2;
	}
	while (fgets(line, sizeof(line), stdin) != NULL) {
		if (sscanf(line, "%255s %127s", user, code) != 2) {
			fprintf(stderr, "pamloop: bad line: %s", line);
			return 2;
		}
		struct pam_conv c = {conv, code};
		pam_handle_t *h = NULL;
		int ret = pam_start(argv[1], user, &c, &h);
		if (ret != PAM_SUCCESS) {
			fprintf(stderr, "pamloop: pam_start: %d\n", ret);
			return 1;
		}
		long long t0 = now_ns();
		ret = pam_authenticate(h, PAM_SILENT);
		long long t1 = now_ns();
		pam_end(h, ret);
		printf("%d %lld\n", ret, t1 - t0);
		fflush(stdout);
	}
	return 0;
}
