//go:build !race

package privsep

const raceBuild = false
