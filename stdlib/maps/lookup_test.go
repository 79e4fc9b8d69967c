package maps

import (
	"slices"
	"sync"
	"testing"
)

type lookupCase struct {
	name    string
	in      string
	want    string
	matched string
	ok      bool
}

func checkLookups(t *testing.T, tests []lookupCase, lookup func(string) (string, string, bool)) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, m, ok := lookup(tt.in)
			if v != tt.want || m != tt.matched || ok != tt.ok {
				t.Errorf("lookup(%q) = %q, %q, %v; want %q, %q, %v", tt.in, v, m, ok, tt.want, tt.matched, tt.ok)
			}
		})
	}
}

// must3 drops the error of a lookup that cannot fail, panicking (and so
// failing the test) if it did.
func must3(v, m string, ok bool, err error) (string, string, bool) {
	if err != nil {
		panic("lookup failed: " + err.Error())
	}
	return v, m, ok
}

// noErr drops the error of a lookup in a table whose Get cannot fail.
func noErr(v, m string, ok bool, _ error) (string, string, bool) { return v, m, ok }

func isLocalTest(d string) bool { return d == "local.test" || d == "localhost.local.test" }

func TestLookupAddress(t *testing.T) {
	t.Parallel()
	tab, _ := openT(t, "hash:virtual")
	o := AddrOptions{Delims: "+", IsLocal: isLocalTest}
	checkLookups(t, []lookupCase{
		{"virtual(5) user@domain: the entire address", "postmaster@example.com", "peter", "postmaster@example.com", true},
		{"virtual(5) lookups fold case", "PostMaster@EXAMPLE.com", "peter", "postmaster@example.com", true},
		{"virtual(5) angle brackets are stripped", "<postmaster@example.com>", "peter", "postmaster@example.com", true},
		{"virtual(5) address extension: user+ext@domain first", "joe+lists@example.com", "joe-lists", "joe+lists@example.com", true},
		{"virtual(5) address extension: then user@domain", "joe+other@example.com", "joe", "joe@example.com", true},
		{"virtual(5) @domain: other addresses in the domain", "nobody@example.com", "jim", "@example.com", true},
		{"virtual(5) @domain: also after the extension forms", "nobody+x@example.com", "jim", "@example.com", true},
		{"virtual(5) user: user+ext for a local domain", "joe+lists@local.test", "joe-lists-local", "joe+lists", true},
		{"virtual(5) user: then user for a local domain", "joe+other@local.test", "joe-local", "joe", true},
		{"virtual(5) user: only when the domain is local", "joe@remote.test", "", "", false},
		{"virtual(5) a quoted local part is looked up quoted", `"a,b"@example.com`, "quoted", `"a,b"@example.com`, true},
		{"mail_addr_find(3) an address without domain matches itself", "joe", "joe-local", "joe", true},
		{"mail_addr_find(3) without domain, the extension is stripped next", "joe+x", "joe-local", "joe", true},
		{"cleanup(8) the null address is not rewritten", "", "", "", false},
		{"cleanup(8) <> is the null address", "<>", "", "", false},
	}, func(s string) (string, string, bool) { return must3(LookupAddress(tab, s, o)) })

	noDelims := AddrOptions{IsLocal: isLocalTest}
	checkLookups(t, []lookupCase{
		{"virtual(5) without recipient_delimiter, user+ext@domain is only exact", "joe+lists@example.com", "joe-lists", "joe+lists@example.com", true},
		{"virtual(5) without recipient_delimiter, no extension is stripped", "joe+other@example.com", "jim", "@example.com", true},
		{"virtual(5) without recipient_delimiter: user@domain, user, @domain", "joe@local.test", "joe-local", "joe", true},
	}, func(s string) (string, string, bool) { return must3(LookupAddress(tab, s, noDelims)) })

	multi := AddrOptions{Delims: "-+"}
	checkLookups(t, []lookupCase{
		{"postconf(5) recipient_delimiter: split at the first of several delimiters", "joe+lists-x@example.com", "joe", "joe@example.com", true},
		{"postconf(5) recipient_delimiter: nil IsLocal never tries user", "joe@local.test", "", "", false},
	}, func(s string) (string, string, bool) { return must3(LookupAddress(tab, s, multi)) })
}

func TestLookupAddressOrder(t *testing.T) {
	t.Parallel()
	// Each case removes the keys that matched before, so every step of
	// canonical(5)'s search order is seen winning over the next.
	keys := []string{"user+ext@local.test", "user@local.test", "user+ext", "user", "@local.test"}
	for i, k := range keys {
		m := map[string]string{}
		for _, k2 := range keys[i:] {
			m[k2] = k2
		}
		v, matched, ok := must3(LookupAddress(FromMap("", m), "user+ext@local.test", AddrOptions{Delims: "+", IsLocal: isLocalTest}))
		if v != k || matched != k || !ok {
			t.Errorf("canonical(5) order step %d: got %q (%q), want %q", i, v, matched, k)
		}
	}
}

func TestLookupAccessSeed(t *testing.T) {
	t.Parallel()
	tab, _ := openT(t, "hash:access")
	o := AddrOptions{Delims: "+"}
	checkLookups(t, []lookupCase{
		{"access(5) domain.tld: the domain of the sender (seed: mydomain.co OK)", "anyone@mydomain.co", "OK", "mydomain.co", true},
		{"access(5) user@domain: the whole address (seed: someone@spammers.com 550 No Spam)", "someone@spammers.com", "550 No Spam", "someone@spammers.com", true},
		{"access(5) user@domain: case-insensitive", "SomeOne@Spammers.COM", "550 No Spam", "someone@spammers.com", true},
		{"access(5) address extension: user+ext@domain, then user@domain", "someone+tag@spammers.com", "550 No Spam", "someone@spammers.com", true},
		{"access(5) user@domain matches only that user", "other@spammers.com", "", "", false},
		{"access(5) parent_domain_matches_subdomains: example.com matches sub.example.com", "x@sub.example.com", "OK example", "example.com", true},
		{"access(5) domain.tld matches the domain itself", "x@example.com", "OK example", "example.com", true},
		{"access(5) .domain.tld matches subdomains", "x@a.sub.example.org", "REJECT subdomains only", ".sub.example.org", true},
		{"access(5) .domain.tld does not match the domain itself", "x@sub.example.org", "", "", false},
		{"access(5) user@: all addresses with that user part", "sales@anything.test", "DISCARD any sales", "sales@", true},
		{"access(5) address extension: user+ext@ then user@", "sales+eu@anything.test", "DISCARD any sales", "sales@", true},
		{"access(5) smtpd_null_access_lookup_key: the null sender is <>", "", "550 no bounces here", "<>", true},
		{"access(5) smtpd_null_access_lookup_key: <> given as such", "<>", "550 no bounces here", "<>", true},
		{"access(5) an address literal domain is not searched as an IP address", "x@[1.2.3.4]", "", "", false},
	}, func(s string) (string, string, bool) { return must3(LookupAccess(tab, s, o)) })
}

func TestLookupAccessOrder(t *testing.T) {
	t.Parallel()
	keys := []string{"user+ext@mail.example.com", "user@mail.example.com", "mail.example.com",
		".example.com", "example.com", ".com", "com", "user+ext@", "user@"}
	for i, k := range keys {
		m := map[string]string{}
		for _, k2 := range keys[i:] {
			m[k2] = k2
		}
		v, matched, ok := must3(LookupAccess(FromMap("", m), "User+Ext@Mail.Example.com", AddrOptions{Delims: "+"}))
		if v != k || matched != k || !ok {
			t.Errorf("access(5) order step %d: got %q (%q), want %q", i, v, matched, k)
		}
	}
}

func TestLookupDomain(t *testing.T) {
	t.Parallel()
	tab, _ := openT(t, "hash:access")
	checkLookups(t, []lookupCase{
		{"access(5) domain.tld: the name itself (seed: mydomain.co OK)", "mydomain.co", "OK", "mydomain.co", true},
		{"access(5) parent_domain_matches_subdomains: mydomain.co matches mail.mydomain.co", "mail.mydomain.co", "OK", "mydomain.co", true},
		{"access(5) .domain.tld matches any subdomain depth", "a.b.sub.example.org", "REJECT subdomains only", ".sub.example.org", true},
		{"access(5) HELO names may end in a dot", "EXAMPLE.COM.", "OK example", "example.com", true},
		{"access(5) numeric host names get no parent domain search (seed: 1.2.3.4 OK)", "1.2.3.4", "OK", "1.2.3.4", true},
		{"access(5) numeric host names get no parent domain search: 1.2.3.99 is not 1.2.3", "1.2.3.99", "", "", false},
		{"access(5) unknown name", "example.net", "", "", false},
		{"access(5) empty name", " ", "", "", false},
	}, func(s string) (string, string, bool) { return must3(LookupDomain(tab, s)) })

	both := FromMap("", map[string]string{".example.com": "dot", "example.com": "plain"})
	checkLookups(t, []lookupCase{
		{"transport(5) .domain is tried before domain for a subdomain", "a.example.com", "dot", ".example.com", true},
		{"transport(5) .domain never matches the domain itself", "example.com", "plain", "example.com", true},
	}, func(s string) (string, string, bool) { return must3(LookupDomain(both, s)) })
}

func TestLookupTransportSeed(t *testing.T) {
	t.Parallel()
	tab, _ := openT(t, "hash:transport")
	o := AddrOptions{Delims: "+"}
	checkLookups(t, []lookupCase{
		{"transport(5) domain (seed: awesomedomain.com smtp:mx1.awesomedomain.com)", "user@awesomedomain.com", "smtp:mx1.awesomedomain.com", "awesomedomain.com", true},
		{"transport(5) domain does not match subdomains (transport_maps is not in parent_domain_matches_subdomains)", "user@mail.awesomedomain.com", "smtp:[fallback.example.org]", "*", true},
		{"transport(5) .domain matches subdomains", "user@host.example.net", "smtp:[relay.example.net]", ".example.net", true},
		{"transport(5) .domain does not match the domain itself", "user@example.net", "smtp:[fallback.example.org]", "*", true},
		{"transport(5) user@domain", "vip@example.net", "smtp:[vip-relay.example.net]", "vip@example.net", true},
		{"transport(5) user+extension@domain, then user@domain", "vip+x@example.net", "smtp:[vip-relay.example.net]", "vip@example.net", true},
		{"transport(5) a domain without dots (seed: nodomain uucp:mx10)", "someone@nodomain", "uucp:mx10", "nodomain", true},
		{"transport(5) * matches any address", "someone@elsewhere.test", "smtp:[fallback.example.org]", "*", true},
		{"transport(5) the null address falls back to *", "", "smtp:[fallback.example.org]", "*", true},
	}, func(s string) (string, string, bool) { return must3(LookupTransport(tab, s, o)) })

	keys := []string{"user+ext@a.b.example.com", "user@a.b.example.com", "a.b.example.com", ".b.example.com", ".example.com", ".com", "*"}
	for i, k := range keys {
		m := map[string]string{"example.com": "never: no parent matching in transport", "b.example.com": "never"}
		for _, k2 := range keys[i:] {
			m[k2] = k2
		}
		v, matched, ok := must3(LookupTransport(FromMap("", m), "user+ext@a.b.example.com", o))
		if v != k || matched != k || !ok {
			t.Errorf("transport(5) order step %d: got %q (%q), want %q", i, v, matched, k)
		}
	}
	if _, _, ok := must3(LookupTransport(FromMap("", map[string]string{"x": "y"}), "a@b", o)); ok {
		t.Error("transport(5) without * found something")
	}
}

func TestLookupIPSeed(t *testing.T) {
	t.Parallel()
	tab, _ := openT(t, "hash:access")
	checkLookups(t, []lookupCase{
		{"access(5) net.work.addr.ess: the whole address (seed: 19.145.0.10 REJECT)", "19.145.0.10", "REJECT", "19.145.0.10", true},
		{"access(5) net.work.addr.ess beats net.work.addr (seed: 1.2.3.4 OK before 1.2.3 REJECT)", "1.2.3.4", "OK", "1.2.3.4", true},
		{"access(5) net.work.addr: an address in that network (seed: 1.2.3 REJECT)", "1.2.3.5", "REJECT", "1.2.3", true},
		{"access(5) networks are whole octets: 1.2.30.4 is not in 1.2.3", "1.2.30.4", "", "", false},
		{"access(5) address literal brackets are removed", "[1.2.3.9]", "REJECT", "1.2.3", true},
		{"smtpd(8) IPv4-mapped IPv6 is looked up as IPv4", "::ffff:1.2.3.4", "OK", "1.2.3.4", true},
		{"access(5) net:work:addr:ess: IPv6 is cut at the last : again and again", "2001:db8::1", "REJECT documentation net", "2001:db8:", true},
		{"access(5) IPv6 is looked up in compressed lower-case form", "[IPv6:2001:DB8:0:0:0:0:0:1]", "REJECT documentation net", "2001:db8:", true},
		{"access(5) not an IP address: looked up once as is", "mydomain.co", "OK", "mydomain.co", true},
	}, func(s string) (string, string, bool) { return must3(LookupIP(tab, s)) })

	var got []string
	LookupIP(&recorder{keys: &got}, "2001:db8::1")
	if want := []string{"2001:db8::1", "2001:db8:", "2001:db8", "2001"}; !slices.Equal(got, want) {
		t.Errorf("access(5) IPv6 keys = %q, want %q", got, want)
	}
	got = nil
	LookupIP(&recorder{keys: &got}, "192.0.2.10")
	if want := []string{"192.0.2.10", "192.0.2", "192.0", "192"}; !slices.Equal(got, want) {
		t.Errorf("access(5) IPv4 keys = %q, want %q", got, want)
	}

	nets, _ := openT(t, "cidr:clients.cidr")
	checkLookups(t, []lookupCase{
		{"cidr_table(5) queried once with the address", "192.0.2.77", "net", "192.0.2.77", true},
		{"cidr_table(5) LookupIP unmaps IPv4-mapped IPv6 first", "::ffff:8.8.8.8", "any4", "8.8.8.8", true},
		{"cidr_table(5) LookupIP removes brackets first", "[192.0.2.1]", "host", "192.0.2.1", true},
	}, func(s string) (string, string, bool) { return must3(LookupIP(nets, s)) })
}

// recorder is a key/value table that records the keys it is asked for.
type recorder struct {
	mu      sync.Mutex
	keys    *[]string
	pattern bool
}

func (r *recorder) Get(key string) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	*r.keys = append(*r.keys, key)
	return "", false
}
func (r *recorder) Name() string    { return "recorder" }
func (r *recorder) IsPattern() bool { return r.pattern }

func TestPatternTablesQueriedOnce(t *testing.T) {
	t.Parallel()
	o := AddrOptions{Delims: "+", IsLocal: func(string) bool { return true }}
	tests := []struct {
		name   string
		lookup func(Table) (string, string, bool)
		want   string
	}{
		{"canonical(5) REGULAR EXPRESSION TABLES: the whole address, once", func(t Table) (string, string, bool) {
			return noErr(LookupAddress(t, "User+Ext@Example.com", o))
		}, "User+Ext@Example.com"},
		{"access(5) REGULAR EXPRESSION TABLES: the whole address, once", func(t Table) (string, string, bool) {
			return noErr(LookupAccess(t, "<user+ext@sub.example.com>", o))
		}, "user+ext@sub.example.com"},
		{"access(5) REGULAR EXPRESSION TABLES: the null sender as <>", func(t Table) (string, string, bool) {
			return noErr(LookupAccess(t, "", o))
		}, "<>"},
		{"access(5) REGULAR EXPRESSION TABLES: the host name, once", func(t Table) (string, string, bool) {
			return noErr(LookupDomain(t, "Mail.Example.com."))
		}, "mail.example.com"},
		{"access(5) CIDR TABLES: the client address, once", func(t Table) (string, string, bool) {
			return noErr(LookupIP(t, "[::ffff:192.0.2.1]"))
		}, "192.0.2.1"},
		{"transport(5) REGULAR EXPRESSION TABLES: the whole address, once", func(t Table) (string, string, bool) {
			return noErr(LookupTransport(t, "user+ext@a.example.com", o))
		}, "user+ext@a.example.com"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			tt.lookup(&recorder{keys: &got, pattern: true})
			if len(got) != 1 || got[0] != tt.want {
				t.Errorf("pattern table got keys %q, want [%q]", got, tt.want)
			}
			got = nil
			tt.lookup(&recorder{keys: &got})
			if len(got) < 2 && tt.want != "<>" {
				t.Errorf("key/value table got keys %q, want several", got)
			}
		})
	}

	re, _ := openT(t, `regexp:{ {/^(.*)@example\.com$/ $1@new.example} }`)
	v, m, ok := must3(LookupAddress(re, "joe+x@example.com", o))
	if v != "joe+x@new.example" || m != "joe+x@example.com" || !ok {
		t.Errorf("canonical(5) regexp: got %q, %q, %v", v, m, ok)
	}
	st, _ := openT(t, "static:smtp:[relay]")
	if v, m, ok := must3(LookupTransport(st, "a@b.example", o)); v != "smtp:[relay]" || m != "a@b.example" || !ok {
		t.Errorf("static table: got %q, %q, %v", v, m, ok)
	}
}

func TestQuery(t *testing.T) {
	t.Parallel()
	tab, _ := openT(t, "hash:access")
	o := AddrOptions{Delims: "+"}
	tests := []struct {
		name    string
		key     string
		want    string
		matched string
		how     string
		ok      bool
	}{
		{"postmap(1) -q by shape: an address is searched as an address", "someone+x@spammers.com", "550 No Spam", "someone@spammers.com", ModeAddress, true},
		{"postmap(1) -q by shape: an IP address is a client address", "1.2.3.7", "REJECT", "1.2.3", ModeAccessIP, true},
		{"postmap(1) -q by shape: a name is a domain", "www.mydomain.co", "OK", "mydomain.co", ModeDomain, true},
		{"postmap(1) -q by shape: <> is the null sender", "<>", "550 no bounces here", "<>", ModeAccess, true},
		{"postmap(1) -q by shape: miss", "nowhere.test", "", "", ModeDomain, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, m, how, ok := Query(tab, tt.key, o)
			if v != tt.want || m != tt.matched || how != tt.how || ok != tt.ok {
				t.Errorf("Query(%q) = %q, %q, %q, %v; want %q, %q, %q, %v", tt.key, v, m, how, ok, tt.want, tt.matched, tt.how, tt.ok)
			}
		})
	}
	modes := []struct {
		name, mode, key, want, matched string
		ok                             bool
	}{
		{"postmap(1) -q get: exact, folded", ModeGet, "MyDomain.CO", "OK", "mydomain.co", true},
		{"postmap(1) -q get: no partial keys", ModeGet, "mail.mydomain.co", "", "", false},
		{"access(5) mode access for an address", ModeAccess, "x@mail.mydomain.co", "OK", "mydomain.co", true},
		{"access(5) mode ip is access-ip", "ip", "1.2.3.4", "OK", "1.2.3.4", true},
		{"transport(5) mode transport", ModeTransport, "x@mydomain.co", "OK", "mydomain.co", true},
		{"mode auto is Query", "auto", "1.2.3.4", "OK", "1.2.3.4", true},
	}
	for _, tt := range modes {
		t.Run(tt.name, func(t *testing.T) {
			v, m, ok, err := QueryAs(tab, tt.mode, tt.key, o)
			if err != nil || v != tt.want || m != tt.matched || ok != tt.ok {
				t.Errorf("QueryAs(%q, %q) = %q, %q, %v, %v; want %q, %q, %v", tt.mode, tt.key, v, m, ok, err, tt.want, tt.matched, tt.ok)
			}
		})
	}
	if _, _, _, err := QueryAs(tab, "nope", "x", o); err == nil {
		t.Error("QueryAs with an unknown mode succeeded")
	}
}
