// Package bus carries the collector's pushes (exemptions, revocations,
// policy changes) between the replicas that share one PostgreSQL database,
// through LISTEN/NOTIFY, so that a change made through any replica reaches
// the agents connected to every other one.
package bus
