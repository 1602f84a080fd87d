// Package mnguardv1 is the generated Go code of mnguard's gRPC API: the
// AgentService terminals call and the AdminService operators call. The
// .proto files beside it are the source; 'make proto' regenerates.
package mnguardv1
