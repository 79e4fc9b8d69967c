package tlspolicy

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/larkpost/larkpost/engine/resolver"
)

// TXTLookup is the DNS lookup MTA-STS needs. *resolver.Resolver has it;
// the TXT record needs no DNSSEC, because the policy itself is protected by
// HTTPS and the cache.
type TXTLookup interface {
	LookupTXT(ctx context.Context, name string) ([]string, error)
}

var _ TXTLookup = (*resolver.Resolver)(nil)

// Source says where the policy of an STSResult came from.
type Source string

// The sources of a policy.
const (
	SourceNone    Source = "none"    // no policy applies
	SourceFetched Source = "fetched" // fetched now
	SourceCache   Source = "cache"   // cached and still current
	// SourceStale is a cached, unexpired policy used because the TXT
	// lookup or the fetch failed (RFC 8461 section 5.1).
	SourceStale Source = "cache after failure"
)

// STSResult is the MTA-STS policy of a domain at one moment.
type STSResult struct {
	Domain  string
	Policy  *Policy // nil when no policy applies
	ID      string  // the id of the policy in force
	Fetched time.Time
	Source  Source
	// Err is a problem met on the way: a failed TXT lookup or fetch. It
	// is informational; Policy is still what applies (a stale cached
	// policy, or nil when there was nothing to fall back on).
	Err error
}

// DefaultFailureBackoff is how long MTASTS waits before fetching a policy
// again after a failure, when FailureBackoff is zero.
const DefaultFailureBackoff = 5 * time.Minute

// maxFailures bounds the memory of recent fetch failures.
const maxFailures = 4096

// MTASTS finds the MTA-STS policy of recipient domains. It is safe for
// concurrent use; its fields must not change once it is in use.
type MTASTS struct {
	DNS   TXTLookup
	HTTP  *http.Client // nil: NewHTTPClient(nil, nil, 0)
	Cache Cache        // nil: nothing is cached, which RFC 8461 discourages
	Now   func() time.Time
	// FailureBackoff keeps a domain whose policy host is down from costing
	// a fetch timeout on every delivery attempt (0: DefaultFailureBackoff).
	FailureBackoff time.Duration

	initOnce sync.Once
	client   *http.Client

	mu       sync.Mutex
	inflight map[string]*call
	failures map[string]failure // by domain
}

type call struct {
	done chan struct{}
	res  STSResult
}

type failure struct {
	id  string
	at  time.Time
	err error
}

func (m *MTASTS) now() time.Time {
	if m.Now != nil {
		return m.Now()
	}
	return time.Now()
}

func (m *MTASTS) httpClient() *http.Client {
	m.initOnce.Do(func() {
		m.client = m.HTTP
		if m.client == nil {
			m.client = NewHTTPClient(nil, nil, 0)
		}
	})
	return m.client
}

// Lookup returns the policy that applies to domain now, following RFC 8461
// section 5.1: look up the TXT record; use the cached policy while its id
// matches and it has not expired; otherwise fetch; when the lookup or the
// fetch fails, keep using an unexpired cached policy. Concurrent lookups
// for one domain share one fetch.
func (m *MTASTS) Lookup(ctx context.Context, domain string) STSResult {
	domain = displayName(domain)
	m.mu.Lock()
	if c, ok := m.inflight[domain]; ok {
		m.mu.Unlock()
		select {
		case <-c.done:
			return c.res
		case <-ctx.Done():
			return STSResult{Domain: domain, Source: SourceNone, Err: ctx.Err()}
		}
	}
	c := &call{done: make(chan struct{})}
	if m.inflight == nil {
		m.inflight = make(map[string]*call)
	}
	m.inflight[domain] = c
	m.mu.Unlock()

	c.res = m.lookup(ctx, domain)

	m.mu.Lock()
	delete(m.inflight, domain)
	m.mu.Unlock()
	close(c.done)
	return c.res
}

func (m *MTASTS) lookup(ctx context.Context, domain string) STSResult {
	res := STSResult{Domain: domain, Source: SourceNone}
	if !validHostname(domain) {
		res.Err = fmt.Errorf("mta-sts: invalid domain %q", domain)
		return res
	}
	now := m.now()

	var (
		entry CacheEntry
		valid bool
	)
	if m.Cache != nil {
		e, ok, err := m.Cache.Get(ctx, domain)
		switch {
		case err != nil:
			res.Err = fmt.Errorf("mta-sts: read cache: %w", err)
		case ok && now.Before(e.Expires()):
			entry, valid = e, true
		}
	}
	useCache := func(src Source, err error) STSResult {
		if !valid {
			if err != nil {
				res.Err = err
			}
			return res
		}
		return STSResult{Domain: domain, Policy: &entry.Policy, ID: entry.ID, Fetched: entry.Fetched, Source: src, Err: err}
	}

	id, err := m.lookupID(ctx, domain)
	if err != nil {
		return useCache(SourceStale, err)
	}
	if id == "" {
		// No record: the domain may have dropped MTA-STS, or an attacker
		// may be hiding it. The cache answers both until it expires.
		return useCache(SourceCache, nil)
	}
	if valid && entry.ID == id {
		return useCache(SourceCache, nil)
	}

	if f, ok := m.recentFailure(domain, id, now); ok {
		return useCache(SourceStale, f)
	}
	p, err := fetchPolicy(ctx, m.httpClient(), domain)
	if err != nil {
		m.noteFailure(domain, id, now, err)
		return useCache(SourceStale, err)
	}
	m.clearFailure(domain)
	fresh := CacheEntry{Policy: *p, ID: id, Fetched: now}
	res = STSResult{Domain: domain, Policy: p, ID: id, Fetched: now, Source: SourceFetched}
	if m.Cache != nil {
		if err := m.Cache.Put(ctx, domain, fresh); err != nil {
			res.Err = fmt.Errorf("mta-sts: write cache: %w", err)
		}
	}
	return res
}

// lookupID returns the id of the domain's single valid STSv1 record, "" when
// there is none (RFC 8461 section 3.1: zero, several or a malformed one
// all mean no policy), and an error when the lookup failed temporarily.
func (m *MTASTS) lookupID(ctx context.Context, domain string) (string, error) {
	if m.DNS == nil {
		return "", errors.New("mta-sts: no dns resolver configured")
	}
	txts, err := m.DNS.LookupTXT(ctx, "_mta-sts."+domain)
	if err != nil {
		if resolver.IsNotFound(err) {
			return "", nil
		}
		return "", fmt.Errorf("mta-sts: %w", err)
	}
	var records []string
	for _, t := range txts {
		if strings.HasPrefix(t, "v=STSv1;") || t == "v=STSv1" {
			records = append(records, t)
		}
	}
	if len(records) != 1 {
		return "", nil
	}
	id, err := ParseRecord(records[0])
	if err != nil {
		return "", nil
	}
	return id, nil
}

func (m *MTASTS) backoff() time.Duration {
	if m.FailureBackoff > 0 {
		return m.FailureBackoff
	}
	return DefaultFailureBackoff
}

// recentFailure reports a fetch for the same domain and id that failed
// within the backoff. A new id is fetched at once: the domain has just
// published something, perhaps the fix.
func (m *MTASTS) recentFailure(domain, id string, now time.Time) (error, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	f, ok := m.failures[domain]
	if !ok || f.id != id || now.Sub(f.at) >= m.backoff() || now.Before(f.at) {
		return nil, false
	}
	return fmt.Errorf("%w (not retried for %s)", f.err, m.backoff()), true
}

func (m *MTASTS) noteFailure(domain, id string, now time.Time, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failures == nil {
		m.failures = make(map[string]failure)
	}
	if len(m.failures) >= maxFailures {
		for d, f := range m.failures {
			if now.Sub(f.at) >= m.backoff() || len(m.failures) >= maxFailures {
				delete(m.failures, d)
			}
		}
	}
	m.failures[domain] = failure{id: id, at: now, err: err}
}

func (m *MTASTS) clearFailure(domain string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.failures, domain)
}
