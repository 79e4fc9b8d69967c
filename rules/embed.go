package rules

import _ "embed"

//go:embed default.star
var defaultConfig []byte

// DefaultConfigName is how the embedded default names itself in logs and diagnostics.
const DefaultConfigName = "embedded:default.star"

// LoadDefault loads the embedded default config.
func LoadDefault() (*Policy, error) { return LoadDefaultWith(Options{}) }

// LoadDefaultWith is LoadDefault with options.
func LoadDefaultWith(o Options) (*Policy, error) {
	return LoadWith(DefaultConfigName, defaultConfig, o)
}
