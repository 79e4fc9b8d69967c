package main

import (
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestServeMetricsAndWebPage: a real `larkpost serve` with metrics_listen
// and web_listen on one port; after one message /metrics counts it and
// the page answers.
func TestServeMetricsAndWebPage(t *testing.T) {
	s := startServer(t, `config(destinations = ["mx.test"], local_recipients = ["ann"], metrics_listen = "127.0.0.1:0", web_listen = "127.0.0.1:0")`)
	waitLog(t, s, "listening on metrics and web page")
	m := regexp.MustCompile(`listening on metrics and web page http://(\S+)/`).FindStringSubmatch(s.log.String())
	if m == nil {
		t.Fatalf("no http listener logged:\n%s", s.log.String())
	}
	base := "http://" + m[1]
	if err := sendOne(s.addr, "bob@example.org", "ann@mx.test", "Subject: hi\r\n\r\nhello\r\n"); err != nil {
		t.Fatal(err)
	}
	get := func(path string) string {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %s", path, resp.Status)
		}
		return string(b)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		body := get("/metrics")
		if strings.Contains(body, `larkpost_deliveries_total{status="sent",transport="local"} 1`) {
			if !strings.Contains(body, `larkpost_messages_accepted_total{listener="smtp",origin="smtp"} 1`) {
				t.Errorf("accepted not counted:\n%s", linesWith(body, "larkpost_messages"))
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("delivery not counted:\n%s", linesWith(body, "larkpost_deliveries"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if page := get("/"); !strings.Contains(page, "larkpost") || !strings.Contains(page, "Read-only (no web_admin_token_file)") {
		t.Errorf("the page without a token file should say read-only:\n%.2000s", page)
	}
}

// linesWith are the lines of s that contain sub.
func linesWith(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
