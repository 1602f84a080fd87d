// Package pamstack reads Linux-PAM service configurations and decides whether their auth
// stacks really require pam_mnguard.so, the agent's second factor.
//
// The parser and the evaluator follow Linux-PAM's own code, not its manual, where the two
// differ (libpam/pam_handlers.c, pam_misc.c, pam_dispatch.c, include/pam_assemble_line.h):
//
//   - Lines: leading blanks are skipped, a '#' anywhere ends the line, a backslash
//     before the newline continues it (unless the physical line holds a '#'), and fields
//     are separated by space, tab and newline only. A field starting with '[' runs to
//     the first ']' ("\]" stands for ']'), in every column: controls and arguments alike.
//   - Types are case-insensitive; a leading '-' only silences the log when the module
//     cannot be loaded (the line still runs and then returns PAM_MODULE_UNKNOWN). An
//     unknown type, a missing control or a missing module path gives a line that always
//     fails. Debian's "@include FILE" and the "include"/"substack" controls pull in
//     another file's lines of the same type; a file that cannot be found becomes a line
//     that always fails, as in libpam. Relative names are looked up in /etc/pam.d, then
//     /usr/lib/pam.d.
//   - Controls: required, requisite, optional, sufficient (case-insensitive), or
//     value=action pairs, with libpam's prefix matching and its rule that any syntax
//     error turns every value into "bad". Unset values take the default, "bad" for
//     bracketed controls.
//   - Evaluation is pam_dispatch.c's: impression and status, "done" and "die" end the
//     (sub)stack, "reset" restores the state at the start of the (sub)stack, a jump in
//     pam_authenticate does not change the state (only a frozen chain treats it as
//     "ok"), counts a whole substack as one module, and cannot leave its substack.
//
// A stack requires pam_mnguard when no run of it can end in PAM_SUCCESS while
// pam_mnguard.so does not accept the code. Every other module may return any PAM value,
// except pam_deny.so, which only fails. pam_mnguard.so is taken to return any value but
// PAM_SUCCESS, PAM_IGNORE and PAM_NEW_AUTHTOK_REQD (it never returns the last two; see
// agent/pam/pam_mnguard.c). The search is exhaustive over these choices, so the answer is
// sound for any module behaviour; the price is that a module trusted to fail (other than
// pam_deny) is not credited. A file that cannot be read, an include loop, nesting deeper
// than libpam allows, a line continued past the end of its file, a NUL byte or a stack
// too large to search all give "not required" with the reason.
package pamstack
