package model

// Catalog is what validation needs to know of the configuration already
// stored. Implementations must be safe for concurrent use.
type Catalog interface {
	// Exists reports whether a stored resource exists.
	Exists(Ref) bool
	// Routes returns the stored routes, for conflict checks.
	Routes() []Route
	// Bindings returns the stored policy bindings, so that a Service gets at
	// most one binding per policy. Validate reads only Name, Target and
	// Policy; Outbound may be nil.
	Bindings() []Binding
	// Listeners returns the stored Listeners, so that an address has at
	// most one. Validate reads only Name and Address; Hosts may be empty.
	Listeners() []Listener
}
