// Package ratelimit is the Starlark `ratelimit` module: token buckets
// and sliding-window counters in the shared state store (package
// engine/state), so that the MX nodes of one domain count as one.
//
//	ratelimit.take(key, rate="100/h", burst=None, cost=1)
//	    takes cost tokens from the bucket key, which refills at rate up to
//	    burst (None: rate's N) and starts full; a value that is true when
//	    they were there, with allowed, remaining, retry_after (seconds)
//	    and error
//	ratelimit.count(key, window="1h", add=1)
//	    adds add to key's count over the last window and returns the
//	    count, this addition included
//
// The script chooses the key and what to do when it runs dry:
//
//	if not ratelimit.take("ip:" + conn.ip, "30/min"):
//	    return defer("too many messages", status = "4.7.0")
//
// Keys are strings of at most 512 bytes, stored as they are (both
// backends take any bytes). take and count keep separate records, and
// count keeps one per window, so one key may serve several.
//
// When the store fails (Redis down or slower than Options.Timeout), the
// module logs one line; take then answers allowed (FailOpen) or refused,
// with error set, and count answers 0 (FailOpen) or fails the hook,
// which defers (451 4.3.5).
package ratelimit
