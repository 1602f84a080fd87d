// Package report produces the self-inspection report (自己点検報告書) that
// Art. 7 of the municipality's information security basic policy asks for:
// what the collector knows of one period, as printable HTML, CSV or JSON,
// in Japanese (the default) or English.
//
// A [Renderer] gathers a [Report] from the store — the compliance checks
// (failures at the end of the period and their duration within it), the
// exemptions granted, MFA lockouts, unlocks and offline codes, the network
// policy, its changes and the isolation findings agents reported, terminals
// enrolled and revoked, operators and their changes, and the verification
// of the audit chain — and renders it. The period is the days first to last
// in the collector's time zone: [first 00:00, last+1 00:00). A period that
// has not ended yet is reported up to the time of generation
// (Report.Complete is false).
//
// JSON is the Report encoded as it is: snake_case keys, times in RFC 3339
// in the collector's time zone, durations in whole seconds.
//
// HTML is one self-contained document (styles inline, no script, no
// external resources) laid out for A4 paper. Every text in it comes from
// the message catalogue (package i18n, keys "report.*").
//
// CSV is one flat table, UTF-8 with a byte order mark (so that spreadsheet
// programs read the Japanese text right: strip it before parsing) and CRLF
// line ends. Its first row names the columns:
//
//	section, label, name, check, terminal_id, hostname, id, device, user,
//	actor, action, target, role, source, reason, ticket, detail, status,
//	time, since, not_before, not_after, revoked_at, revoked_by, used_at,
//	created_at, last_sign_in_at, seconds, count, value, hash
//
// Every row has a section, and label holds its human description in the
// report's language; the other columns are filled as the section says,
// and empty otherwise. Times are RFC 3339 in the collector's time zone.
//
//	meta                    name (title, first_day, last_day, from, to, time_zone,
//	                        generated_at, complete, collector_version, language), value
//	count                   name, count; check for the per-check counts
//	                        (failing_at_end, failed_in_period, unknown_now); the
//	                        others: exemptions_issued, exemptions_used,
//	                        exemptions_revoked, lockouts, unlocks,
//	                        offline_login_codes, offline_exemption_codes,
//	                        network_finding_events, network_policy_changes,
//	                        terminals_enrolled, terminals_revoked, operators,
//	                        operator_changes, sign_ins, sign_ins_failed,
//	                        sign_ins_refused, audit_entries_in_period
//	failure                 a terminal that failed a check in the period: check,
//	                        terminal_id, hostname, status (failing: still at the
//	                        end of the period, since "since"; recovered),
//	                        seconds failed within the period, count (stretches of
//	                        failure), name (the detail's message key), detail
//	exemption               id, terminal_id, hostname, device (VID:PID:SERIAL),
//	                        actor (the issuer), reason, ticket, source (online,
//	                        offline), time (issued), not_before, not_after,
//	                        revoked_at, revoked_by, detail (why revoked), status
//	                        (used, not_used: no write reported), used_at, value
//	                        (true when a device without serial was allowed)
//	lockout                 time, terminal_id, hostname, user, target (the PAM
//	                        service), reason
//	network_policy          the network policy in force when the report was
//	                        generated (absent when none): id (its version), status
//	                        (enforce_on, enforce_off), time and actor (last
//	                        change), target (the allowed networks, space-separated,
//	                        in the CLI's form), value (the DNS servers)
//	network_finding         what one terminal's agent reported breaking isolation,
//	                        per kind: terminal_id, hostname, name (the kind, e.g.
//	                        socket, usb_adapter), count, since (first), time
//	                        (last), detail (the first one's, with its process)
//	unlock, offline_login_code, offline_exemption_code, operator_change,
//	network_policy_change   audit entries: id, time, actor, action, target, detail
//	enrolled                terminal_id, hostname, time (enrolled), status (the
//	                        terminal's state now)
//	revoked                 terminal_id, hostname, time (revoked), reason
//	operator                name, role, status (enabled, disabled, locked),
//	                        created_at, last_sign_in_at
//	audit_chain             status (ok, broken), count (entries walked), id, time
//	                        and hash (hex) of the newest entry walked; when
//	                        broken, value is the entry where it breaks and reason
//	                        why
//
// Cells that a spreadsheet would read as a formula (starting with =, +, -,
// @, tab or carriage return) are prefixed with an apostrophe.
package report
