//go:build race

package privsep

// raceBuild: the race detector's runtime needs far more address space
// than a filter child's RLIMIT_AS leaves, so a race build sets none.
const raceBuild = true
