package tlspolicy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
)

// Auth says how the server's certificate is authenticated.
type Auth string

// The authentication methods.
const (
	AuthNone Auth = "none" // any certificate is accepted
	AuthPKIX Auth = "pkix" // Web PKI chain valid for the MX host name (AuthPKIX)
	AuthDANE Auth = "dane" // TLSA records (AuthDANE)
)

// Mechanism names what set the policy of a Decision.
type Mechanism string

// The mechanisms.
const (
	MechLevel  Mechanism = "level" // the configured default
	MechDANE   Mechanism = "dane"
	MechMTASTS Mechanism = "mta-sts"
)

// Decision is the TLS policy for delivering to one MX host of a domain.
// It is plain data, so that a trace can print it and a delivery agent can
// act on it without calling back here.
type Decision struct {
	Domain, MXHost string
	Level          Level // the configured default
	Mechanism      Mechanism

	// RequireTLS forbids plaintext: without STARTTLS or after a failed
	// handshake, the mail is deferred for this host.
	RequireTLS bool
	Auth       Auth
	// Enforce makes a failed verification stop delivery to this host.
	// Without it a failure is only reported (MTA-STS testing mode).
	Enforce bool
	// Defer says not to deliver to this host at all now. It is never a
	// bounce: policies and DNS get fixed, and the queue retries.
	Defer bool

	Why     string   // one line, for logs and "larkpost trace --resolve"
	Reports []string // problems that did not change the decision

	TLSA  []TLSA   // the usable records, when Auth is AuthDANE
	Names []string // reference identifiers; Names[0] is sent as SNI

	STS *STSResult // the MTA-STS lookup, when one was made
}

// String is Why followed by the reports.
func (d Decision) String() string {
	if len(d.Reports) == 0 {
		return d.Why
	}
	return d.Why + " [" + strings.Join(d.Reports, "; ") + "]"
}

// Decider combines the configured level, DANE and MTA-STS. It is safe for
// concurrent use; its fields must not change once it is in use.
type Decider struct {
	Level Level      // "" means LevelMay
	DANE  TLSALookup // nil: no DNSSEC resolver, so the dane level acts as may
	// MTASTS is consulted whenever DANE did not apply; nil turns it off.
	MTASTS *MTASTS
}

// Decide returns the policy for delivering mail for domain to mxHost. The
// order follows the standards: DANE first, because RFC 8461 section 2
// forbids MTA-STS from overriding it; then MTA-STS, which may only make
// the configured level stricter; the level is the floor.
func (d *Decider) Decide(ctx context.Context, domain, mxHost string) Decision {
	domain, mxHost = displayName(domain), displayName(mxHost)
	level := d.Level
	if level == "" {
		level = LevelMay
	}
	dec := Decision{Domain: domain, MXHost: mxHost, Level: level, Mechanism: MechLevel, Auth: AuthNone, Names: []string{mxHost}}

	switch level {
	case LevelNone:
		// An explicit "none" is an administrator's override, so no
		// lookup may turn TLS back on.
		dec.Why = "smtp_tls_security_level=none: no TLS"
		return dec
	case LevelEncrypt:
		dec.RequireTLS = true
		dec.Why = "smtp_tls_security_level=encrypt: TLS required, certificate not verified"
	case LevelVerify:
		dec.RequireTLS, dec.Auth, dec.Enforce = true, AuthPKIX, true
		dec.Why = "smtp_tls_security_level=verify: TLS required, certificate must be valid for " + mxHost
	default:
		dec.Why = "smtp_tls_security_level=" + string(level) + ": opportunistic TLS"
	}

	if level == LevelDANE && d.dane(ctx, &dec) {
		return dec
	}
	if d.MTASTS != nil {
		d.mtaSTS(ctx, &dec)
	}
	return dec
}

// dane applies TLSA records and reports whether the decision is final.
func (d *Decider) dane(ctx context.Context, dec *Decision) bool {
	if d.DANE == nil {
		dec.Reports = append(dec.Reports, "dane: no dnssec resolver configured, dane level acts as may")
		return false
	}
	secure, err := d.DANE.MXSecure(ctx, dec.Domain)
	switch {
	case err != nil:
		dec.Mechanism, dec.RequireTLS, dec.Defer = MechDANE, true, true
		dec.Why = fmt.Sprintf("dane: dnssec mx lookup for %s failed, not delivering to %s now: %v", dec.Domain, dec.MXHost, err)
		return true
	case !secure:
		dec.Reports = append(dec.Reports, fmt.Sprintf("dane: mx records of %s are not dnssec-validated, so tlsa records of its mx hosts do not apply", dec.Domain))
		return false
	}
	ans, err := d.DANE.LookupTLSA(ctx, dec.MXHost)
	switch {
	case err != nil:
		// Postfix defers too: a lookup that fails may be an attacker
		// hiding the records that would have required TLS.
		dec.Mechanism, dec.RequireTLS, dec.Defer = MechDANE, true, true
		dec.Why = fmt.Sprintf("dane: tlsa lookup failed, not delivering to %s now: %v", dec.MXHost, err)
		return true
	case ans.AddrInsecure:
		dec.Reports = append(dec.Reports, fmt.Sprintf("dane: address records of %s are not dnssec-validated, so dane does not apply to it", dec.MXHost))
		return false
	case len(ans.Records) == 0:
		dec.Why += fmt.Sprintf(" (no tlsa records at %s)", ans.Name)
		return false
	case !ans.Secure:
		dec.Reports = append(dec.Reports, fmt.Sprintf("dane: tlsa records at %s are not dnssec-validated (ad bit not set), ignored", ans.Name))
		return false
	}
	usable, problems := SplitUsable(ans.Records)
	dec.Reports = append(dec.Reports, problems...)
	dec.Mechanism, dec.RequireTLS = MechDANE, true
	if len(usable) == 0 {
		// RFC 7672 section 2.2: published but unusable records still
		// announce TLS support, so TLS stays mandatory; there is nothing
		// to authenticate with. MTA-STS may still add verification.
		dec.Why = fmt.Sprintf("dane: tlsa records at %s are all unusable: TLS required, certificate not verified", ans.Name)
		return false
	}
	dec.Auth, dec.Enforce, dec.TLSA = AuthDANE, true, usable
	dec.Why = fmt.Sprintf("dane: %d usable dnssec-validated tlsa records at %s: TLS required, certificate must match them, no plaintext fallback",
		len(usable), ans.Name)
	return true
}

// mtaSTS raises dec to what the domain's MTA-STS policy demands.
func (d *Decider) mtaSTS(ctx context.Context, dec *Decision) {
	res := d.MTASTS.Lookup(ctx, dec.Domain)
	dec.STS = &res
	if res.Err != nil {
		dec.Reports = append(dec.Reports, res.Err.Error())
	}
	p := res.Policy
	if p == nil || p.Mode == ModeNone {
		return
	}
	desc := fmt.Sprintf("mta-sts %s policy of %s (id %s, %s)", p.Mode, dec.Domain, res.ID, res.Source)

	if v := p.CheckMX(dec.Domain, dec.MXHost); !v.Deliver {
		dec.Mechanism, dec.RequireTLS, dec.Auth, dec.Enforce, dec.Defer = MechMTASTS, true, AuthPKIX, true, true
		dec.Why = v.Report + ": not delivering to this mx"
		return
	} else if v.Report != "" {
		dec.Reports = append(dec.Reports, v.Report)
	}

	switch p.Mode {
	case ModeEnforce:
		dec.Mechanism, dec.RequireTLS, dec.Auth, dec.Enforce = MechMTASTS, true, AuthPKIX, true
		dec.Why = fmt.Sprintf("%s lists %s: TLS required, certificate must be valid for %s", desc, dec.MXHost, dec.MXHost)
	case ModeTesting:
		if dec.Auth == AuthNone {
			dec.Auth = AuthPKIX
		}
		dec.Why += fmt.Sprintf("; %s: certificate checked for %s, failures only reported", desc, dec.MXHost)
	}
}

// ErrNoSTARTTLS is what a caller passes to CheckTLS when the server did
// not offer STARTTLS.
var ErrNoSTARTTLS = errors.New("server does not offer STARTTLS")

// CheckTLS says whether delivery to the host may go on after TLS did not
// work out: tlsErr is ErrNoSTARTTLS, a handshake error, or the error of
// CheckPeer; nil means all went well. Deliver false means defer for this
// host and never retry it in plaintext.
func (d Decision) CheckTLS(tlsErr error) Verdict {
	if tlsErr == nil {
		return Verdict{Deliver: true}
	}
	if d.RequireTLS || d.Enforce {
		return Verdict{Report: fmt.Sprintf("%s requires TLS with %s: %v: deferring", d.Mechanism, d.MXHost, tlsErr)}
	}
	if d.Auth != AuthNone {
		return Verdict{Deliver: true, Report: fmt.Sprintf("tls with %s not verified (reported only): %v", d.MXHost, tlsErr)}
	}
	return Verdict{Deliver: true}
}

// CheckPeer verifies the server of a finished handshake as the decision
// asks, for callers that handshake with InsecureSkipVerify and judge
// afterwards (so that opportunistic TLS needs one connection only). base
// supplies RootCAs and Time. AuthNone accepts everything.
func (d Decision) CheckPeer(base *tls.Config, cs tls.ConnectionState) error {
	now := timeFunc(base)()
	switch d.Auth {
	case AuthDANE:
		return VerifyDANE(cs.PeerCertificates, d.TLSA, d.Names, now)
	case AuthPKIX:
		if base != nil && base.InsecureSkipVerify {
			return errors.New("certificate verification is turned off in the base tls config")
		}
		return VerifyPKIX(cs.PeerCertificates, rootsOf(base), d.MXHost, now)
	}
	return nil
}

// TLSConfig returns the client configuration for the STARTTLS handshake
// with the host, derived from base (RootCAs, Time, versions). With
// Enforce a verification failure fails the handshake; in report-only
// modes the handshake succeeds and report (if not nil) gets the failure.
func (d Decision) TLSConfig(base *tls.Config, report func(error)) *tls.Config {
	if d.Auth == AuthDANE {
		return DANEConfig(base, d.TLSA, d.Names)
	}
	cfg := cloneConfig(base)
	cfg.ServerName = d.MXHost
	switch {
	case d.Auth == AuthPKIX && d.Enforce:
		// The policy asks for verification even if the base config
		// was relaxed for opportunistic use.
		cfg.InsecureSkipVerify = false
	case d.Auth == AuthPKIX:
		cfg.InsecureSkipVerify = true
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if err := d.CheckPeer(base, cs); err != nil && report != nil {
				report(err)
			}
			return nil
		}
	default:
		cfg.InsecureSkipVerify = true
	}
	return cfg
}
