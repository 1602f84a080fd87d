// Package csvsafe keeps text put into CSV exports from being read as a
// formula by the spreadsheets auditors open them in (OWASP's CSV injection
// advice): host names, messages and reasons come from terminals and people.
package csvsafe

// Cell returns s with an apostrophe before it when a spreadsheet would take
// it for a formula: it starts with =, +, -, @, a tab or a carriage return.
func Cell(s string) string {
	if s == "" {
		return s
	}
	switch s[0] {
	case '=', '+', '-', '@', '\t', '\r':
		return "'" + s
	}
	return s
}
