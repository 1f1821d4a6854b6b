// Package model is the control plane's view of the mesh: the objects sources read (Istio ServiceEntry,
// DestinationRule and WorkloadEntry, Aeraki MetaRouter and ApplicationProtocol) and the facts derived
// from them once per version, in the form the translator consumes: which ports speak which
// meta-protocol, on which addresses, with which endpoints, subsets, load balancing and router.
//
// A Snapshot is immutable once built: every slice, map and message it holds, and every object it
// points to, is shared by all readers and must not be modified. Sources build a new one for each
// change (Build), so a translator may read one from many goroutines without locks.
package model
