#!/usr/bin/env python3
"""Differential test of one Postfix config against larkpost's import of it.

Called by .ci/interop-import.sh once per config, with Postfix's smtpd
already listening on 127.0.0.1:PORT (config_directory PF, XCLIENT allowed
from loopback). For 100+ cases generated from the config (client IP and
verified name x HELO x sender x recipient) it:

  * plays XCLIENT ADDR/NAME, EHLO, MAIL FROM, RCPT TO, RSET against Postfix
    and records the reply code at each stage;
  * runs `larkpost trace --json` with the same client, HELO, sender and
    recipient on the imported larkpost.star;
  * compares the reply class (2/4/5) of the first stage that is not 2xx on
    each side. With smtpd_delay_reject = yes Postfix reports client, HELO
    and sender rejects at RCPT, so larkpost rejecting at connect, HELO or
    MAIL agrees with Postfix rejecting at RCPT with the same class;
  * for recipients both accept, compares the routing: the Postfix side is
    computed with Postfix's own tables and settings (postmap -q on the
    canonical, virtual and transport maps, postconf for mydestination,
    relay_domains, relayhost, the *_transport settings and master.cf), the
    larkpost side is trace's "recipients" list: the addresses after virtual
    expansion, the delivery agent (master.cf command: local, smtp, error,
    ...) and, for smtp/lmtp, the nexthop.

Differences matching a line of the known-differences file (config | case
glob | reason) are printed as known; any other makes the exit status 1.
The last line of --out is the summary.
"""
import argparse
import concurrent.futures as cf
import fnmatch
import hashlib
import ipaddress
import json
import os
import re
import smtplib
import subprocess
import sys

STAGES = ["connect", "helo", "mail", "rcpt"]


def sh(args, check=False):
    p = subprocess.run(args, capture_output=True, text=True, timeout=60)
    if check and p.returncode != 0:
        raise RuntimeError("%s: %s" % (" ".join(args), p.stderr.strip()))
    return p


class Postfix:
    """Postfix's settings and tables for config_directory pf."""

    def __init__(self, pf):
        self.pf = pf
        self.conf = {}
        for line in sh(["postconf", "-c", pf, "-x"], check=True).stdout.splitlines():
            k, _, v = line.partition(" = ")
            self.conf[k.strip()] = v.strip()
        self.master = {}  # service name (unix) -> command
        for line in sh(["postconf", "-c", pf, "-M"], check=True).stdout.splitlines():
            f = line.split()
            if len(f) >= 8 and f[1] == "unix":
                self.master[f[0]] = f[7]
        self.cache = {}

    def get(self, name):
        v = self.conf.get(name, "")
        if name == "myorigin" and v.startswith("/") and os.path.isfile(v):
            with open(v, encoding="utf-8") as fh:  # Debian's myorigin = /etc/mailname
                v = fh.readline().strip()
        return v

    def list(self, name):
        """A list setting; a /file word stands for the words in the file."""
        out = []
        for x in re.split(r"[\s,]+", self.get(name)):
            if x.startswith("/") and os.path.isfile(x):
                with open(x, encoding="utf-8") as fh:
                    out += [w for ln in fh if not ln.lstrip().startswith("#") for w in re.split(r"[\s,]+", ln) if w]
            elif x:
                out.append(x)
        return out

    def tables(self, name):
        """The table specs of a *_maps setting (type:name words)."""
        return [x for x in self.list(name) if ":" in x and not x.startswith("$")]

    def query(self, specs, key):
        """postmap -q over a list of tables: the first answer, or None."""
        for spec in specs:
            if spec.startswith("proxy:"):
                spec = spec[len("proxy:"):]
            if not spec.split(":", 1)[0] in ("hash", "btree", "lmdb", "cdb", "texthash", "inline", "static", "regexp", "pcre", "unix"):
                continue
            ck = (spec, key)
            if ck not in self.cache:
                p = sh(["postmap", "-c", self.pf, "-q", key, spec])
                self.cache[ck] = p.stdout.strip() if p.returncode == 0 else None
            if self.cache[ck] is not None:
                return self.cache[ck]
        return None

    def table_keys(self, spec):
        """The keys of a hash: table, read from its source text."""
        kind, _, path = spec.partition(":")
        if kind not in ("hash", "btree", "lmdb", "cdb", "texthash") or not os.path.isfile(path):
            return []
        keys = []
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if not line.strip() or line.lstrip().startswith("#") or line[0].isspace():
                    continue
                k = line.split()[0]
                if kind == "hash" and path.endswith("aliases"):
                    k = k.rstrip(":")
                keys.append(k)
        return keys

    # -- address classes (trivial-rewrite) --------------------------------
    def is_local(self, domain):
        d = domain.lower()
        if not d:
            return True
        dests = [x.lower() for x in self.list("mydestination")]
        return d in dests

    def domain_in(self, name, domain):
        d = domain.lower()
        vals = [x.lower() for x in self.list(name)]
        if d in vals:
            return True
        sub = name in self.list("parent_domain_matches_subdomains")
        for v in vals:
            if v.startswith(".") and d.endswith(v):
                return True
            if sub and d.endswith("." + v):
                return True
        for spec in self.tables(name):
            if self.query([spec], d) is not None:
                return True
        return False

    def split(self, addr):
        local, at, domain = addr.rpartition("@")
        if not at:
            return addr, ""
        return local, domain.lower()

    def strip_ext(self, local):
        delims = self.get("recipient_delimiter")
        for ch in delims:
            if ch and ch in local:
                return local.split(ch, 1)[0]
        return local

    def qualify(self, addr):
        if "@" not in addr:
            return addr + "@" + self.get("myorigin")
        return addr

    def lookup_addr(self, specs, addr, bare_user):
        """Postfix's address lookup order: user+ext@domain, user@domain,
        (user+ext, user when the domain is local), @domain."""
        local, domain = self.split(addr)
        base = self.strip_ext(local)
        keys = [addr.lower()]
        if base != local:
            keys.append((base + "@" + domain).lower())
        if bare_user and self.is_local_or_origin(domain):
            keys.append(local.lower())
            if base != local:
                keys.append(base.lower())
        keys.append("@" + domain)
        for k in keys:
            v = self.query(specs, k)
            if v is not None:
                return v
        return None

    def is_local_or_origin(self, domain):
        return self.is_local(domain) or domain == self.get("myorigin").lower()

    def canonical(self, addr):
        for setting in ("recipient_canonical_maps", "canonical_maps"):
            specs = self.tables(setting)
            if not specs:
                continue
            v = self.lookup_addr(specs, addr, True)
            if v:
                if v.startswith("@"):
                    v = self.split(addr)[0] + v
                addr = self.qualify(v)
        return addr

    def virtual(self, addr, depth=0):
        specs = self.tables("virtual_alias_maps")
        if not specs or depth > 20:
            return [addr]
        v = self.lookup_addr(specs, addr, True)
        if v is None:
            return [addr]
        out = []
        for t in [x.strip() for x in v.split(",") if x.strip()]:
            t = self.qualify(t)
            if t.lower() == addr.lower():
                out.append(t)
            else:
                out.extend(self.virtual(t, depth + 1))
        return out

    def aliases(self, addr, depth=0):
        """local(8)'s aliases(5) expansion of a local address: the final
        local users (and |command, /file, :include: targets as written)."""
        local, domain = self.split(addr)
        base = self.strip_ext(local).lower()
        specs = self.tables("alias_maps")
        v = None
        if specs and depth < 20:
            v = self.query(specs, local.lower())
            if v is None and base != local.lower():
                v = self.query(specs, base)
        if v is None:
            return [base]
        out = []
        for t in [x.strip() for x in v.split(",") if x.strip()]:
            if t[0] in "|/\"" or t.startswith(":include:"):
                out.append(t)
                continue
            t = self.qualify(t)
            tl, td = self.split(t)
            if not self.is_local(td):
                out.append(t.lower())
            elif self.strip_ext(tl).lower() == base:
                out.append(base)
            else:
                out.extend(self.aliases(t, depth + 1))
        return out

    def resolve(self, addr):
        """(agent, nexthop) for one address after virtual expansion."""
        local, domain = self.split(addr)
        if self.is_local(domain):
            channel = self.get("local_transport")
            nexthop = self.get("myhostname")
        elif self.domain_in("virtual_mailbox_domains", domain):
            channel = self.get("virtual_transport")
            nexthop = domain
        elif self.domain_in("relay_domains", domain):
            channel = self.get("relay_transport")
            nexthop = self.get("relayhost") or domain
        else:
            channel = self.get("default_transport")
            nexthop = self.get("relayhost") or domain
        transport, _, nh = channel.partition(":")
        if nh:
            nexthop = nh
        specs = self.tables("transport_maps")
        if specs:
            keys = [addr.lower()]
            base = self.strip_ext(local)
            if base != local:
                keys.append((base + "@" + domain).lower())
            keys.append(domain)
            parts = domain.split(".")
            for i in range(1, len(parts)):
                keys.append("." + ".".join(parts[i:]))
            keys.append("*")
            for k in keys:
                v = self.query(specs, k)
                if v is not None:
                    t, _, n = v.partition(":")
                    if t:
                        transport = t
                    if n:
                        nexthop = n
                    break
        agent = self.master.get(transport, transport)
        return agent, nexthop


# -- cases -------------------------------------------------------------------
def net_inside(pfx):
    """An address inside a mynetworks entry other than loopback, or None."""
    try:
        n = ipaddress.ip_network(pfx.strip("[]").replace("]/", "/"), strict=False)
    except ValueError:
        return None
    if n.version != 4 or n.is_loopback or n.num_addresses < 4:
        return None
    return str(n.network_address + 3)


def access_tables(pfx, restrictions):
    """The access tables of check_<pfx>_access in a restriction list."""
    words = re.split(r"[\s,]+", restrictions)
    out = []
    for i, w in enumerate(words):
        if w == "check_%s_access" % pfx and i + 1 < len(words):
            out.append(words[i + 1])
    return out


def make_cases(pf, name):
    myhost = pf.get("myhostname")
    mydomain = pf.get("mydomain")
    dests = [d for d in pf.list("mydestination") if "." in d or d == "localhost"]
    restr = " ".join(pf.get(p) for p in ("smtpd_client_restrictions", "smtpd_helo_restrictions",
                                           "smtpd_sender_restrictions", "smtpd_relay_restrictions",
                                           "smtpd_recipient_restrictions"))

    # clients: (ip, verified name or None)
    clients = [("127.0.0.1", "localhost"), ("192.0.2.10", "client.example.org"), ("192.0.2.11", None)]
    for n in pf.list("mynetworks"):
        ip = net_inside(n)
        if ip:
            clients.append((ip, None))
    for spec in access_tables("client", restr):
        for k in pf.table_keys(spec):
            if re.fullmatch(r"[0-9.]+", k):
                parts = k.split(".")
                ip = ".".join(parts + ["9"] * (4 - len(parts)))
                clients.append((ip, None))
            elif "." in k:
                clients.append(("192.0.2.12", k.lstrip(".")))

    helos = ["client.example.org", "nodots", "[192.0.2.10]"]
    for spec in access_tables("helo", restr):
        helos.extend(pf.table_keys(spec))

    senders = ["", "someone@sender.example", "root@" + (mydomain or myhost), "nodomain"]
    for spec in access_tables("sender", restr):
        for k in pf.table_keys(spec):
            senders.append(k if "@" in k else "user@" + k.lstrip("."))

    rcpts = ["root@" + myhost, "postmaster@localhost", "nosuchuser@" + myhost, "root+tag@" + myhost,
             "user@foreign.example", "postmaster", "root"]
    for d in dests:
        rcpts += ["root@" + d, "nosuch@" + d]
    for d in pf.list("relay_domains"):
        if ":" not in d:
            rcpts += ["user@" + d, "user@sub." + d]
    for spec in pf.tables("alias_maps"):
        for k in pf.table_keys(spec)[:6]:
            rcpts.append(k + "@" + myhost)
    for d in pf.list("virtual_alias_domains"):
        rcpts.append("unknown@" + d)
    for setting in ("virtual_alias_maps", "transport_maps", "relocated_maps", "canonical_maps"):
        for spec in pf.tables(setting):
            for k in pf.table_keys(spec):
                if k.startswith("@"):
                    rcpts.append("anyone" + k)
                elif k.startswith("."):
                    rcpts.append("user@x" + k)
                elif "@" in k:
                    rcpts.append(k)
                elif "." in k:
                    rcpts.append("user@" + k)
                else:
                    rcpts.append(k + "@" + (mydomain or myhost))
    for spec in access_tables("recipient", restr):
        for k in pf.table_keys(spec):
            rcpts.append(k if "@" in k else "user@" + k.lstrip("."))

    def dedupe(xs):
        seen, out = set(), []
        for x in xs:
            if x not in seen:
                seen.add(x)
                out.append(x)
        return out

    clients, helos, senders, rcpts = dedupe(clients), dedupe(helos), dedupe(senders), dedupe(rcpts)
    outside, inside = clients[1], clients[0]
    base_helo, base_sender, base_rcpt = helos[0], "", rcpts[0]
    cases = []
    # every value once with benign others, from outside and from inside
    for c in (outside, inside):
        for r in rcpts:
            cases.append((c, base_helo, base_sender, r))
        for s in senders:
            cases.append((c, base_helo, s, base_rcpt))
    for c in clients:
        cases.append((c, base_helo, base_sender, base_rcpt))
        cases.append((c, base_helo, "someone@sender.example", "user@foreign.example"))
    for h in helos:
        cases.append((outside, h, base_sender, base_rcpt))
    # then combinations, picked by a hash so the set is the same every run
    combos = [(c, h, s, r) for c in clients for h in helos for s in senders for r in rcpts]
    combos.sort(key=lambda t: hashlib.sha1(repr(t).encode()).hexdigest())
    want = max(150, len(dedupe(cases)) + 40)
    cases = dedupe(cases)
    have = set(cases)
    for t in combos:
        if len(cases) >= want:
            break
        if t not in have:
            cases.append(t)
            have.add(t)
    return cases


def case_key(c):
    (ip, rdns), helo, sender, rcpt = c
    return "client=%s[%s] helo=%s from=<%s> to=<%s>" % (rdns or "unknown", ip, helo, sender, rcpt)


# -- the two sides ------------------------------------------------------------
def xtext(s):
    return "".join(ch if 33 <= ord(ch) <= 126 and ch not in "+=" else "+%02X" % ord(ch) for ch in s)


def postfix_dialog(port, c):
    (ip, rdns), helo, sender, rcpt = c
    res = {}
    s = smtplib.SMTP(timeout=20)
    try:
        code, _ = s.connect("127.0.0.1", port)
        if code != 220:
            return {"error": "banner %d" % code}
        name = rdns or "[UNAVAILABLE]"
        code, msg = s.docmd("XCLIENT", "ADDR=%s NAME=%s REVERSE_NAME=%s" % (ip, xtext(name), xtext(name)))
        res["connect"] = (code, msg.decode(errors="replace"))
        if code // 100 != 2:
            return res
        code, msg = s.docmd("EHLO", helo)
        res["helo"] = (code, msg.decode(errors="replace").splitlines()[0] if msg else "")
        if code // 100 != 2:
            return res
        code, msg = s.docmd("MAIL", "FROM:<%s>" % sender)
        res["mail"] = (code, msg.decode(errors="replace"))
        if code // 100 != 2:
            return res
        code, msg = s.docmd("RCPT", "TO:<%s>" % rcpt)
        res["rcpt"] = (code, msg.decode(errors="replace"))
        s.docmd("RSET")
        s.docmd("QUIT")
    except (smtplib.SMTPException, OSError) as e:
        res["error"] = str(e)
    finally:
        s.close()
    return res


def lark_class(step):
    if "code" in step and step["code"]:
        return int(step["code"]) // 100
    d = step.get("decision", "")
    if d in ("reject",):
        return 5
    if d in ("defer", "tempfail"):
        return 4
    return 2


def larkpost_trace(larkpost, star, c):
    (ip, rdns), helo, sender, rcpt = c
    args = [larkpost, "trace", "-c", star, "--json", "--client-ip", ip, "--helo", helo,
            "--from=" + sender, "--to=" + rcpt]
    if rdns:
        args += ["--rdns", rdns]
    p = subprocess.run(args, capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        return {"error": "trace exited %d: %s" % (p.returncode, (p.stderr or p.stdout).strip()[:300])}
    try:
        j = json.loads(p.stdout)
    except ValueError as e:
        return {"error": "trace output is not JSON: %s" % e}
    res = {"recipients": j.get("recipients", [])}
    for st in j.get("steps", []):
        if st.get("stage") in STAGES and st["stage"] not in res:
            res[st["stage"]] = (st.get("code") or lark_class(st) * 100 if lark_class(st) != 2 else 250,
                                "%s%s" % (st.get("decision", ""), (" " + st["text"]) if st.get("text") else ""))
    return res


def first_failure(res):
    for st in STAGES:
        if st in res and res[st][0] // 100 != 2:
            return st, res[st][0] // 100
    return None


def fmt(res):
    if "error" in res:
        return "ERROR " + res["error"]
    parts = []
    for st in STAGES:
        if st in res:
            parts.append("%s %d %s" % (st, res[st][0], res[st][1].strip()[:70]))
    return "; ".join(parts)


def compare(pf, delay, c, p, l, routes):
    """A list of differences (aspect, text); empty when both agree. The
    routing compared, if any, is appended to routes."""
    if "error" in p or "error" in l:
        return [("error", "postfix: %s | larkpost: %s" % (fmt(p), fmt(l)))]
    fp, fl = first_failure(p), first_failure(l)
    if fp is None and "rcpt" not in p:
        return [("error", "postfix dialog incomplete: %s" % fmt(p))]
    same = fp == fl or (fp and fl and fp[1] == fl[1] and delay and fp[0] == "rcpt"
                        and fl[0] in ("connect", "helo", "mail"))
    if not same:
        return [("reply", "postfix: %s | larkpost: %s" % (fmt(p), fmt(l)))]
    if fp is not None:
        return []
    # both accepted the recipient: the routing
    rcpt = c[3]
    # Local recipients are compared by user after aliases(5) expansion
    # (what local(8) delivers to), others by address, agent and nexthop.
    want = []
    for a in pf.virtual(pf.canonical(rcpt)):
        agent, nh = pf.resolve(a)
        if agent == "local":
            for u in pf.aliases(a):
                if "@" in u:
                    ag2, nh2 = pf.resolve(u)
                    want.append((u, ag2, nh2.lower() if ag2 in ("smtp", "lmtp") else ""))
                else:
                    want.append((u, "local", ""))
        else:
            want.append((a.lower(), agent, nh.lower() if agent in ("smtp", "lmtp") else ""))
    got = []
    for r in l.get("recipients", []):
        agent = (r.get("transport") or "").lower()
        agent = pf.master.get(agent, agent)
        addr = (r.get("address") or "").lower()
        if agent == "local":
            u = pf.split(addr)[0]
            got.append((u if u[:1] in "|/\"" or u.startswith(":include:") else pf.strip_ext(u), "local", ""))
            continue
        nh = (r.get("destination") or r.get("nexthop") or "").lower() if agent in ("smtp", "lmtp") else ""
        got.append((addr, agent, nh))
    want_s, got_s = sorted(set(want)), sorted(set(got))
    fw = lambda xs: ", ".join("%s %s%s" % (a, ag, (" " + nh) if nh else "") for a, ag, nh in xs) or "(none)"
    routes.append("postfix: %s | larkpost: %s" % (fw(want_s), fw(got_s)))
    if want_s == got_s:
        return []
    return [("route", routes[-1])]


def bad_route(lines, c):
    """The cases whose routing differs (to leave them out of the count)."""
    key = "route " + case_key(c) + ":"
    return [c] if any(key in ln for ln in lines) else []


def load_known(path, name):
    known = []
    if not path or not os.path.exists(path):
        return known
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = [x.strip() for x in line.split("|", 2)]
            if len(parts) != 3:
                continue
            cfg, pat, reason = parts
            if fnmatch.fnmatchcase(name, cfg):
                known.append((pat, reason))
    return known


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pf", required=True, help="Postfix config_directory smtpd runs with")
    ap.add_argument("--star", required=True)
    ap.add_argument("--larkpost", required=True)
    ap.add_argument("--known")
    ap.add_argument("--out", required=True)
    ap.add_argument("--jobs", type=int, default=3)
    a = ap.parse_args()

    pf = Postfix(a.pf)
    delay = pf.get("smtpd_delay_reject") == "yes"
    cases = make_cases(pf, a.name)
    known = load_known(a.known, a.name)

    with cf.ThreadPoolExecutor(a.jobs) as ex:
        pres = list(ex.map(lambda c: postfix_dialog(a.port, c), cases))
        lres = list(ex.map(lambda c: larkpost_trace(a.larkpost, a.star, c), cases))

    agree = explained = 0
    lines = []
    route_of = {}
    seen_known = {}  # (pattern, reason) -> the differences it explains
    for c, p, l in zip(cases, pres, lres):
        routes = []
        diffs = compare(pf, delay, c, p, l, routes)
        if routes:
            route_of[c] = routes[0]
        key = case_key(c)
        if not diffs:
            agree += 1
            continue
        unexplained = []
        for aspect, text in diffs:
            full = "%s %s: %s" % (aspect, key, text)
            hit = next(((pat, r) for pat, r in known if fnmatch.fnmatchcase(aspect + " " + key, pat)), None)
            if hit:
                lines.append("known   %s\n          reason: %s" % (full, hit[1]))
                seen_known.setdefault(hit, []).append(full)
            else:
                unexplained.append(full)
        if unexplained:
            lines += ["differ  " + u for u in unexplained]
        else:
            explained += 1
    n = len(cases)
    bad = n - agree - explained
    summary = "%s: %d/%d cases agree (%.1f%%; %d of them accepted with the same routing), %d known differences, %d unexplained (%.1f%% agree or are explained)" % (
        a.name, agree, n, 100.0 * agree / n, sum(1 for c in cases if c in route_of and not c in bad_route(lines, c)),
        explained, bad, 100.0 * (agree + explained) / n)
    with open(a.out, "w", encoding="utf-8") as fh:
        fh.write("# %s: %d cases against Postfix on 127.0.0.1:%d (%s)\n" % (a.name, n, a.port, a.pf))
        for c, p, l in zip(cases, pres, lres):
            fh.write("case %s\n    postfix: %s\n    larkpost: %s\n" % (case_key(c), fmt(p), fmt(l)))
            if c in route_of:
                fh.write("    routing: %s\n" % route_of[c])
        fh.write("\n".join(lines) + "\n" if lines else "")
        fh.write(summary + "\n")
    # On the terminal: each known difference once, every other in full.
    for (pat, why), fulls in seen_known.items():
        print("known   %d x %s\n          e.g. %s\n          reason: %s" % (len(fulls), pat, fulls[0], why))
    for ln in lines:
        if ln.startswith("differ"):
            print(ln)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
