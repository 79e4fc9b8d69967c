// Package dnsbl is the Starlark `dnsbl` module: DNS blocklist (DNSBL)
// and domain blocklist (RHSBL) lookups, and postscreen's weighted score
// over several lists.
//
//	dnsbl.query(ip, zone)          is ip listed in zone? (2.0.0.192.zen.spamhaus.org)
//	dnsbl.query_domain(domain, zone)  is a domain listed? (example.com.dbl.spamhaus.org)
//	dnsbl.score(ip, sites)         the sum of the weights of the lists that
//	                               list ip, sites in postscreen_dnsbl_sites
//	                               syntax ("zen.spamhaus.org*3",
//	                               "list.dnswl.org=127.0.[0..255].[1..3]*-2")
//
// A list answers a query with A records in 127.0.0.0/8 when the name is
// listed and NXDOMAIN when it is not. What else it may answer is not a
// listing: addresses outside 127.0.0.0/8 come from a broken list or a
// resolver that rewrites NXDOMAIN, and 127.255.255.0/24 is Spamhaus's
// range of error codes ("query refused"). Those error codes, and lookups
// that fail, are status "temperror": a script must never take "could not
// ask" for "not listed".
//
// DNSBLs have no Authentication-Results method (RFC 8601), so nothing is
// recorded there.
package dnsbl
