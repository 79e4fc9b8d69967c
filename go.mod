module github.com/larkpost/larkpost

go 1.26.8

require (
	github.com/emersion/go-message v0.18.2
	github.com/emersion/go-smtp v0.25.1
	github.com/miekg/dns v1.1.73
	go.starlark.net v0.0.0-20260908191801-89a6a09411d5
)

require (
	github.com/emersion/go-sasl v0.0.0-20241020182733-b788ff22d5a6 // indirect
	golang.org/x/net v0.62.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
)
