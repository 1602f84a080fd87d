package nft

import "log/slog"

// DefaultTable is the table's name (family inet) when Options.Table is empty.
const DefaultTable = "mnguard"

// Options configures an Enforcer.
type Options struct {
	Logger *slog.Logger
	// NetNS is a file descriptor of the network namespace to work in
	// (tests); 0 is the agent's own.
	NetNS int
	// Table is the table's name in family inet; "" is DefaultTable.
	Table string
}
