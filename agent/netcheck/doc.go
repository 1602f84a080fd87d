// Package netcheck checks that a My Number terminal talks to no other
// segment (Art. 6(3)(a)) and, when the network policy asks for it, enforces
// that itself.
//
// The Platform (platform_linux.go, platform_windows.go) lists adapters,
// routes, sockets and DNS servers and announces network changes;
// Evaluate (findings.go) judges one such scan against the policy
// (internal/netpolicy) and returns the findings; the Manager (manager.go)
// scans at start, on every announced change and periodically, raises a
// network.finding event for each new finding and network.finding_cleared
// when its cause goes away, keeps the Enforcer's firewall rules in place
// (package nft on Linux, winfw on Windows), repairs them on drift, cuts
// USB network adapters off the bus, and reports all of it as the
// posture's network section.
//
// Two decisions of the evaluation are worth knowing. A listening socket
// is a finding only while enforcement is not in place: the agent's rules
// drop inbound traffic from outside the policy, so a listener is then
// reachable from allowed networks only. And an address on an adapter
// whose network lies outside the policy is reported as a "route"
// finding, like the route the kernel derives from it; virtual adapters
// are not exempt, since a tunnel reaches another network as well as a
// card does.
//
// The Manager leaves its rules in place when it stops: the agent stopping
// must not open the segment. Only a policy without enforcement removes
// them.
package netcheck
