package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/larkpost/larkpost/engine/cleanup"
	"github.com/larkpost/larkpost/engine/maildrop"
	"github.com/larkpost/larkpost/engine/maillog"
	"github.com/larkpost/larkpost/engine/milter"
	"github.com/larkpost/larkpost/engine/smtpd"
	"github.com/larkpost/larkpost/queue"
	"github.com/larkpost/larkpost/rules"
)

// pickupInterval is how often the maildrop is scanned: sendmail does not
// wake the server, so that it works the same whether one runs or not.
const pickupInterval = time.Second

// pickupClient is how a sendmail submission appears in the queue record;
// pickup also uses it to recognise a message it queued before a crash.
const pickupClient = "localhost[127.0.0.1]"

// pickup is Postfix's pickup: it takes what `larkpost sendmail` left in
// data_dir/maildrop through the same intake as SMTP and into the queue.
// Only this goroutine touches its maps.
type pickup struct {
	e   *Engine
	dir string

	// queued holds files whose message is in the queue but which could
	// not be removed: queueing them again would deliver twice.
	queued map[string]bool
	// waiting holds messages deferred by the policy or by a queue error,
	// retried with the queue's backoff rather than every scan.
	waiting   map[string]*pickupRetry
	lastErr   string
	lastSweep time.Time
}

type pickupRetry struct {
	next time.Time
	wait time.Duration
}

// startPickup scans the maildrop once now and then every pickupInterval
// until Shutdown.
func (e *Engine) startPickup() {
	p := &pickup{e: e, dir: filepath.Join(e.dataDir, "maildrop"), queued: map[string]bool{}, waiting: map[string]*pickupRetry{}}
	if err := maildrop.Init(p.dir); err != nil {
		// sendmail creates it as well; pickup keeps scanning meanwhile.
		e.log.Warn("pickup: " + err.Error())
	}
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		t := time.NewTicker(pickupInterval)
		defer t.Stop()
		for {
			p.scan()
			select {
			case <-e.done:
				return
			case <-t.C:
			}
		}
	}()
}

func (p *pickup) scan() {
	now := time.Now()
	if now.Sub(p.lastSweep) > time.Hour {
		p.lastSweep = now
		if n, err := maildrop.Sweep(p.dir, 24*time.Hour); n > 0 || err != nil {
			p.e.log.Info("pickup: removed " + strconv.Itoa(n) + " abandoned file(s) from maildrop/tmp" + pickupErrSuffix(err))
		}
	}
	files, err := maildrop.List(p.dir)
	if err != nil {
		// Once per distinct error: the scan repeats every second.
		if err.Error() != p.lastErr {
			p.e.log.Warn("pickup: " + err.Error())
		}
		p.lastErr = err.Error()
		return
	}
	p.lastErr = ""
	present := make(map[string]bool, len(files))
	for _, f := range files {
		select {
		case <-p.e.done:
			return
		default:
		}
		present[filepath.Base(f)] = true
		p.take(f, now)
	}
	for id := range p.waiting {
		if !present[id] {
			delete(p.waiting, id)
		}
	}
	for id := range p.queued {
		if !present[id] {
			delete(p.queued, id)
		}
	}
}

func pickupErrSuffix(err error) string {
	if err == nil {
		return ""
	}
	return ": " + err.Error()
}

// take submits one maildrop file. The file goes away only once its
// message is in the queue, in rejected/, or discarded by the policy.
func (p *pickup) take(path string, now time.Time) {
	name := filepath.Base(path)
	log := p.e.log.With(maillog.Program("pickup"))
	if p.queued[name] {
		p.remove(path, name)
		return
	}
	if w := p.waiting[name]; w != nil && now.Before(w.next) {
		return
	}
	pol := p.e.policy.Load()
	// The envelope line and the headers pickup adds come on top of the
	// message; the intake judges the message's own size.
	env, msg, err := maildrop.ReadLimitWith(p.e.openDrop, path, pol.Settings.MessageSizeLimit+64<<10)
	if err == nil && env.ID != name {
		err = fmt.Errorf("%s: %w: file name and id %s differ", path, maildrop.ErrMalformed, env.ID)
	}
	switch {
	case errors.Is(err, maildrop.ErrMalformed), errors.Is(err, maildrop.ErrTooBig):
		dst, qerr := maildrop.Quarantine(path)
		if qerr != nil {
			p.postpone(name, nil, nil, path, "cannot move a bad file aside: "+qerr.Error(), now)
			return
		}
		log.Warn(name + ": reject: sendmail from local: " + err.Error() + "; moved to " + dst)
		return
	case err != nil:
		p.postpone(name, nil, nil, path, err.Error(), now)
		return
	}

	// The submitter wrote UID and User; the file's owner is what the
	// kernel says, and only that may become conn.user, which hooks trust.
	uid := env.Owner
	if env.UID != uid {
		log.Warn(env.ID + ": maildrop file claims uid " + strconv.Itoa(env.UID) + " but is owned by uid " + strconv.Itoa(uid))
	}
	log.Info(env.ID + ": uid=" + strconv.Itoa(uid) + " from=<" + env.Sender + ">")

	qid := env.ID
	if rec, err := p.e.queue.Get(env.ID); err == nil {
		if rec.Submitted.Equal(env.Time) && rec.Client == pickupClient {
			// Queued before a crash took the server between Accept and
			// the removal of the file.
			log.Info(env.ID + ": already queued; removing the maildrop file")
			p.remove(path, name)
			return
		}
		// Another message has the id (a forged file, or a clock that
		// went back): its record must not be overwritten.
		qid = queue.NewID()
		log.Warn(env.ID + ": queue id in use by another message; queued as " + qid)
	} else if !errors.Is(err, queue.ErrNotFound) {
		qid = queue.NewID()
		log.Warn(env.ID + ": cannot check the queue for the id (" + err.Error() + "); queued as " + qid)
	}
	p.submit(path, env, msg, qid, uid, now)
}

// stageNames are the SMTP server's words for the stages, for log lines
// in the shape of its own.
var stageNames = map[rules.Stage]string{rules.StageConnect: "CONNECT", rules.StageHelo: "HELO",
	rules.StageMail: "MAIL", rules.StageRcpt: "RCPT", rules.StageData: "END-OF-MESSAGE"}

// submit runs the intake, as the SMTP server does, and queues what it
// accepts.
func (p *pickup) submit(path string, env *maildrop.Envelope, raw []byte, qid string, uid int, now time.Time) {
	ctx := context.Background()
	pol := p.e.policy.Load()
	conn := rules.Conn{IP: netip.AddrFrom4([4]byte{127, 0, 0, 1}), RDNS: "localhost", Helo: "localhost",
		Listener: "sendmail", User: pickupUser(uid), InNetworks: true}
	in := rules.NewIntake(pol, &conn, func() string { return qid })
	utf8 := !pickupASCII(env.Sender)
	for _, r := range env.Rcpts {
		utf8 = utf8 || !pickupASCII(r)
	}
	msg := pickupCRLF(raw)

	out := in.Drive(ctx, &rules.Whole{From: env.Sender, To: env.Rcpts, Size: int64(len(msg)), UTF8: utf8, StopOnDefer: true,
		Message: func() *rules.Message { return pol.ParseHead(msg, int64(len(msg))) }})
	rejected := out.Rejected
	switch out.StoppedAt {
	case rules.StageConnect, rules.StageHelo, rules.StageMail, rules.StageData:
		// A refusal before any recipient, or of the content, stops the
		// whole message.
		p.refused(path, env, raw, stageNames[out.StoppedAt], out.Refusal, "", now)
		return
	case rules.StageRcpt:
		if out.Rcpt != "" {
			// Retrying the whole message keeps one copy per recipient:
			// nothing has been queued yet.
			p.refused(path, env, raw, "RCPT", out.Refusal, out.Rcpt, now)
			return
		}
		p.noRecipients(path, env, raw, rejected)
		return
	}
	if in.Discard {
		p.e.log.Info(qid + ": discard: END-OF-MESSAGE from local: " + pickupDiscardSource(in.Log()))
		p.remove(path, filepath.Base(path))
		return
	}
	if len(rejected) > 0 && !p.keepRefused(path, env, raw, rejected, now) {
		return
	}

	// The time in the maildrop file is the submitter's word: arrival
	// (and so delay=) is when pickup took the message.
	sub := &cleanup.Submission{ID: qid, Origin: cleanup.Sendmail, Sender: in.Tx.Sender.String(), Client: conn, UID: uid,
		Arrival: now, Submitted: env.Time, UTF8: utf8, Hold: in.Hold, HoldReason: in.HoldReason,
		Decisions: in.Log(), Effects: in.Effects(), Content: cleanup.Whole(msg)}
	for _, r := range in.Tx.Rcpts {
		sub.Rcpts = append(sub.Rcpts, cleanup.Rcpt{Addr: r.String()})
	}
	if d := p.milters(ctx, in, sub); d.Kind != rules.Continue {
		if d.Kind == rules.Discard {
			p.e.log.Info(qid + ": discard: END-OF-MESSAGE from local: " + d.Source)
			p.remove(path, filepath.Base(path))
			return
		}
		p.refused(path, env, raw, "END-OF-MESSAGE", d, "", now)
		return
	}
	if len(sub.Rcpts) == 0 {
		p.e.log.Info(qid + ": discard: END-OF-MESSAGE from local: a milter removed every recipient")
		p.remove(path, filepath.Base(path))
		return
	}
	if _, err := p.e.cleanup.Inject(ctx, sub); err != nil {
		if errors.Is(err, cleanup.ErrPolicy) {
			p.e.log.Error(qid + ": hook failed in cleanup: " + err.Error())
			p.e.notify("software", qid+": hook failed in cleanup: "+err.Error())
		} else {
			p.e.log.Warn(qid + ": warning: queue file write error: " + err.Error())
			p.e.notify("resource", qid+": queue file write error: "+err.Error())
		}
		p.postpone(filepath.Base(path), env, raw, path, err.Error(), now)
		return
	}
	p.queued[filepath.Base(path)] = true
	p.remove(path, filepath.Base(path))
}

// milters gives the message to the non_smtpd_milters, one whole
// conversation each, as Postfix's cleanup does for mail that did not
// come by SMTP; each is given the message as the ones before left it.
// The decision is Continue unless one refused or discarded it.
func (p *pickup) milters(ctx context.Context, in *rules.Intake, sub *cleanup.Submission) rules.Decision {
	if len(p.e.nonSMTPMilters) == 0 {
		return rules.Decision{}
	}
	ct := sub.Content
	start := int64(len(ct.Header))
	if rest := ct.Data[start:]; bytes.HasPrefix(rest, []byte("\r\n")) {
		start += 2
	} else if bytes.HasPrefix(rest, []byte("\n")) {
		start++
	}
	msg := milter.NewMessage(ct.Header, bytes.NewReader(ct.Data), start, ct.Size-start)
	defer msg.Close()
	pol := p.e.policy.Load()
	msg.LimitHeader(pol.Settings.HeaderTotalLimit)
	info := milter.Info{Hostname: pol.Settings.Hostname, DaemonName: "pickup", Version: "larkpost",
		ClientName: "localhost", ClientAddr: sub.Client.IP}
	for _, m := range p.e.nonSMTPMilters {
		env := milter.Envelope{Helo: "localhost", From: sub.Sender, ID: sub.ID}
		for _, r := range sub.Rcpts {
			env.Rcpts = append(env.Rcpts, r.Addr)
		}
		res, err := m.Check(ctx, info, env, msg)
		if err != nil {
			p.e.log.Warn("warning: " + sub.ID + ": milter " + m.Name() + ": " + err.Error() + "; default action " + res.Action)
		}
		d := cleanup.MilterDecision(m.Name(), res.Verdict)
		if d.Kind != rules.Continue {
			d = in.Record(rules.StageData, "", d)
		}
		switch d.Kind {
		case rules.Reject, rules.Defer, rules.Discard:
			for _, mod := range res.Mods {
				if mod.Body != nil {
					mod.Body.Close()
				}
			}
			return d
		case rules.Hold:
			sub.Hold, sub.HoldReason = true, d.Text
		}
		cleanup.ApplyMilter(sub, msg, m.Name(), res.Mods, p.e.log)
	}
	sub.Decisions = in.Log()
	if msg.BodyReplaced() {
		var b bytes.Buffer
		if _, err := msg.WriteTo(&b); err != nil {
			p.e.log.Warn("warning: " + sub.ID + ": reading the body a milter replaced: " + err.Error())
			return rules.Decision{Kind: rules.Defer, Code: 451, Status: "4.3.0", Text: "Error processing message - try again later", Source: "milter", Hook: "milter"}
		}
		sub.Content = cleanup.Whole(b.Bytes())
	}
	sub.TakeMilterHeader(msg)
	return rules.Decision{}
}

// noRecipients moves a message none of whose recipients was accepted to
// rejected/, with every reason.
func (p *pickup) noRecipients(path string, env *maildrop.Envelope, raw []byte, rejected []rules.RcptRefusal) {
	if len(rejected) == 0 {
		d := rules.Decision{Kind: rules.Reject, Code: 554, Status: "5.5.1", Text: "Error: no valid recipients", Hook: "pickup", Source: "maildrop file"}
		rejected = append(rejected, rules.RcptRefusal{Decision: d})
	}
	var reasons []string
	for _, r := range rejected {
		reasons = append(reasons, pickupReply(r.Decision)+pickupFor(r.Rcpt))
	}
	if p.reject(path, env, raw, strings.Join(reasons, "; ")) {
		for _, r := range rejected {
			p.logRefusal(env, "RCPT", r.Decision, r.Rcpt, "moved to maildrop/rejected")
		}
	}
}

// keepRefused puts the refused recipients' copy in rejected/ before the
// rest is queued, so a crash in between loses no recipient. It reports
// whether the message may go on to the queue.
func (p *pickup) keepRefused(path string, env *maildrop.Envelope, raw []byte, rejected []rules.RcptRefusal, now time.Time) bool {
	part := *env
	part.Rcpts = nil
	var reasons []string
	for _, r := range rejected {
		part.Rcpts = append(part.Rcpts, r.Rcpt)
		reasons = append(reasons, pickupReply(r.Decision)+pickupFor(r.Rcpt))
	}
	part.Reason = strings.Join(reasons, "; ")
	if _, err := maildrop.Reject(p.dir, &part, raw); err != nil {
		p.postpone(filepath.Base(path), env, raw, path, "cannot keep the refused recipients' copy: "+err.Error(), now)
		return false
	}
	for _, r := range rejected {
		p.logRefusal(env, "RCPT", r.Decision, r.Rcpt, "this recipient's copy moved to maildrop/rejected")
	}
	return true
}

// refused handles a refusal of the whole message: a temporary one waits
// for a retry, a permanent one moves the message to rejected/ with the
// reason, for the admin to see. Local mail is never dropped silently.
func (p *pickup) refused(path string, env *maildrop.Envelope, raw []byte, stage string, d rules.Decision, rcpt string, now time.Time) {
	if d.Kind == rules.Defer {
		d.LogFailure(p.e.log, "client", "local")
		p.postpone(filepath.Base(path), env, raw, path, stage+": "+pickupReply(d), now)
		return
	}
	if p.reject(path, env, raw, pickupReply(d)+pickupFor(rcpt)) {
		p.logRefusal(env, stage, d, rcpt, "moved to maildrop/rejected")
	}
}

// reject moves a message to rejected/ with the reason and reports
// whether it is there.
func (p *pickup) reject(path string, env *maildrop.Envelope, raw []byte, reason string) bool {
	kept := *env
	kept.Reason = reason
	if _, err := maildrop.Reject(p.dir, &kept, raw); err != nil {
		// Still in new/: tried again after a pause, not every scan.
		p.e.log.Warn(env.ID + ": cannot move to maildrop/rejected: " + err.Error() + "; refused: " + reason)
		p.waiting[filepath.Base(path)] = &pickupRetry{next: time.Now().Add(time.Minute), wait: time.Minute}
		return false
	}
	p.remove(path, filepath.Base(path))
	return true
}

// logRefusal writes the reject line, in the shape of the SMTP server's,
// and says where the message went.
func (p *pickup) logRefusal(env *maildrop.Envelope, stage string, d rules.Decision, rcpt, where string) {
	line := env.ID + ": reject: sendmail from local: " + pickupReply(d) + "; stage=" + stage + " from=<" + env.Sender + ">"
	if rcpt != "" {
		line += " to=<" + rcpt + ">"
	}
	line += "; " + where
	p.e.log.Info(line)
	if d.Failed() {
		p.e.notify("software", "hook "+d.Hook+" failed at "+d.Source+": "+d.Err.Error()+"\n\n"+line)
	} else {
		p.e.notify("policy", line+"\n\ndecided by "+d.Hook+" at "+d.Source)
	}
}

func pickupFor(rcpt string) string {
	if rcpt == "" {
		return ""
	}
	return " (to <" + rcpt + ">)"
}

func pickupReply(d rules.Decision) string {
	text, _, _ := strings.Cut(d.Text, "\n")
	return strconv.Itoa(d.Code) + " " + d.Status + " " + text
}

// postpone leaves a message in new/ for a later try, with the queue's
// backoff; after max_queue_lifetime it goes to rejected/ instead, as a
// deferred queued message would bounce.
func (p *pickup) postpone(name string, env *maildrop.Envelope, raw []byte, path, why string, now time.Time) {
	set := p.e.policy.Load().Settings
	if env != nil && now.Sub(env.Time) > set.MaxQueueLifetime {
		reason := "gave up after " + set.MaxQueueLifetime.String() + ": " + why
		if p.reject(path, env, raw, reason) {
			p.e.log.Info(name + ": reject: sendmail from local: " + reason + "; moved to maildrop/rejected")
		}
		return
	}
	w := p.waiting[name]
	if w == nil {
		w = &pickupRetry{wait: set.MinBackoff}
		p.waiting[name] = w
	} else {
		w.wait = min(2*w.wait, set.MaxBackoff)
	}
	w.next = now.Add(w.wait)
	p.e.log.Info(name + ": defer: sendmail from local: " + why + "; retry in " + w.wait.String())
}

func (p *pickup) remove(path, name string) {
	if err := maildrop.Remove(path); err != nil {
		p.queued[name] = true
		p.e.log.Warn(name + ": queued, but the maildrop file stays: " + err.Error())
		return
	}
	delete(p.queued, name)
	delete(p.waiting, name)
}

// pickupUser is conn.user for a uid: the login name, or the number when
// the uid has none.
func pickupUser(uid int) string {
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		return u.Username
	}
	return strconv.Itoa(uid)
}

func pickupDiscardSource(ds []rules.Step) string {
	for _, d := range ds {
		if d.Kind == rules.Discard {
			return d.Hook + " at " + d.Source
		}
	}
	return ""
}

func pickupASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// pickupCRLF gives the message the line endings the queue keeps (sendmail
// reads whatever its caller writes, usually bare LF), and a final one.
func pickupCRLF(b []byte) []byte {
	out := smtpd.NormalizeNewlines(b)
	if len(out) > 0 && !bytes.HasSuffix(out, []byte("\r\n")) {
		out = append(out, '\r', '\n')
	}
	return out
}
