package rules

import (
	"fmt"
	"path/filepath"
	"strings"

	"go.starlark.net/starlark"

	"github.com/larkpost/larkpost/engine/dkimsign"
)

// DKIMKey is one signing key of dkim_keys.
type DKIMKey struct {
	Domain, Selector, KeyFile, Algorithm string
}

// DKIMSettings are the dkim_* settings: the keys outgoing mail is signed
// with and what is signed.
type DKIMSettings struct {
	Keys     []DKIMKey
	Headers  []string // dkim_sign_headers; nil: dkimsign.DefaultHeaders
	Oversign []string // dkim_oversign_headers; nil: dkimsign.DefaultOversign
}

func init() {
	dkimSettings := map[string]setting{
		"dkim_keys": {"list of dicts", setDKIMKeys,
			"DKIM signing keys, each {\"domain\": ..., \"selector\": ..., \"key_file\": ...} (PEM, RSA 1024-4096 bits or Ed25519, not readable by other users; relative to the config's folder); mail from networks, logged-in users, sendmail and the server itself is signed with the key of its From domain or of the nearest parent domain that has one (several keys for one domain all sign: RSA and Ed25519); key files are reloaded when they change; `larkpost dkim keygen` makes one; default: none, nothing is signed"},
		"dkim_sign_headers": {"list of header names", func(s *Settings, v starlark.Value) error {
			return setList(&s.DKIM.Headers, v, checkFieldName)
		}, "header fields DKIM signatures cover when the message has them; default: From, Reply-To, Subject, Date, To, Cc, Message-ID, In-Reply-To, References, Sender, MIME-Version, Content-Type, Content-Transfer-Encoding, the Resent-* and List-* fields, Autocrypt"},
		"dkim_oversign_headers": {"list of header names", func(s *Settings, v starlark.Value) error {
			return setList(&s.DKIM.Oversign, v, checkFieldName)
		}, "header fields signed once more than they occur, so that adding one later (a second From above the signed one) breaks the signature; default [\"From\"]"},
	}
	for name, st := range dkimSettings {
		settingTable[name] = st
		bindings[name] = BindSession
	}
	settingExamples["dkim_keys"] = `[{"domain": "example.com", "selector": "s2026", "key_file": "dkim/example.com.s2026.key"}]`
	settingExamples["dkim_sign_headers"] = `["From", "To", "Subject", "Date", "Message-ID"]`
	settingExamples["dkim_oversign_headers"] = `["From", "Subject", "Reply-To"]`
}

func checkFieldName(name string) error {
	if name == "" || strings.ContainsAny(name, ": \t\r\n") {
		return fmt.Errorf("bad header field name %q", name)
	}
	return nil
}

func setDKIMKeys(s *Settings, v starlark.Value) error {
	list, ok := v.(starlark.Indexable)
	if !ok {
		return fmt.Errorf("want a list of dicts, got %s", v.Type())
	}
	var keys []DKIMKey
	for i := range list.Len() {
		d, ok := list.Index(i).(*starlark.Dict)
		if !ok {
			return fmt.Errorf("item %d: want a dict with domain, selector and key_file, got %s", i, list.Index(i).Type())
		}
		var k DKIMKey
		fields := map[string]*string{"domain": &k.Domain, "selector": &k.Selector, "key_file": &k.KeyFile, "algorithm": &k.Algorithm}
		for _, item := range d.Items() {
			name, _ := starlark.AsString(item[0])
			dst, ok := fields[name]
			if !ok {
				return fmt.Errorf("item %d: unknown key %s (want domain, selector, key_file, algorithm)", i, item[0])
			}
			s, ok := starlark.AsString(item[1])
			if !ok {
				return fmt.Errorf("item %d: %s: want a string, got %s", i, name, item[1].Type())
			}
			*dst = s
		}
		if k.Domain == "" || k.Selector == "" || k.KeyFile == "" {
			return fmt.Errorf("item %d: domain, selector and key_file are required", i)
		}
		k.Domain = strings.ToLower(strings.TrimSuffix(k.Domain, "."))
		keys = append(keys, k)
	}
	s.DKIM.Keys = keys
	return nil
}

// checkDKIM loads the signing keys, so that `larkpost check` reports a
// missing, unreadable, weak or world-readable key at the setting's line.
func (l *loader) checkDKIM(p *Policy) {
	d := p.Settings.DKIM
	if len(d.Keys) == 0 {
		return
	}
	var cfg []dkimsign.KeyConfig
	for _, k := range d.Keys {
		f := k.KeyFile
		if !filepath.IsAbs(f) {
			f = filepath.Join(p.baseDir(), f)
		}
		cfg = append(cfg, dkimsign.KeyConfig{Domain: k.Domain, Selector: k.Selector, File: f, Algorithm: k.Algorithm})
	}
	s, err := dkimsign.New(cfg, dkimsign.Options{Headers: d.Headers, Oversign: d.Oversign, Log: p.log})
	if err != nil {
		l.errorf(l.settingPos(p, "dkim_keys"), "dkim_keys: %v", err)
		return
	}
	for _, w := range s.Warnings() {
		p.Warnings = append(p.Warnings, Diagnostic{Pos: l.settingPos(p, "dkim_keys"), Msg: "dkim_keys: " + w})
	}
	p.dkim = s
}

// DKIMSigner signs outgoing mail with dkim_keys; nil when none are set.
func (p *Policy) DKIMSigner() *dkimsign.Signer { return p.dkim }
