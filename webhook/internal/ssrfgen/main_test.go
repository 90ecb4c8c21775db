package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

// The committed table is what the committed registry files give: after a
// registry update, run go generate ./webhook.
func TestTableUpToDate(t *testing.T) {
	want, err := generate(".")
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("../../ssrf_table.go")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("webhook/ssrf_table.go is out of date: run go generate ./webhook")
	}
}

// IANA's CSV quirks: footnote marks, two blocks in one cell, a line break in
// a quoted cell, a terminated allocation with empty flags, N/A.
func TestParse(t *testing.T) {
	const csv = "Address Block,Name,RFC,Allocation Date,Termination Date,Source,Destination,Forwardable,Globally Reachable,Reserved-by-Protocol\r\n" +
		"192.0.0.0/24 [2],IETF Protocol Assignments,\"[RFC6890], Section 2.1\",2010-01,N/A,False,False,False,False,False\r\n" +
		"\"192.0.0.170/32, 192.0.0.171/32\",NAT64/DNS64 Discovery,\"[RFC8880][RFC7050], Section 2.2\",2013-02,N/A,False,False,False,False,True\r\n" +
		"192.88.99.0/24,Deprecated (6to4 Relay Anycast),[RFC7526],2001-06,2015-03,,,,,\r\n" +
		"2001::/32,TEREDO,\"[RFC4380]\n        [RFC8190]\",2006-01,N/A,True,True,True,N/A [2],False\r\n" +
		"2001:3::/32,AMT,[RFC7450],2014-12,N/A,True,True,True,True,False\r\n"
	rows, err := parse(strings.NewReader(csv))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range rows {
		s := r.prefix.String() + " refused"
		if r.allowed {
			s = r.prefix.String() + " allowed"
		}
		got = append(got, s)
	}
	want := "192.0.0.0/24 refused|192.0.0.170/32 refused|192.0.0.171/32 refused|192.88.99.0/24 refused|2001::/32 refused|2001:3::/32 allowed"
	if strings.Join(got, "|") != want {
		t.Fatalf("parsed %s\nwant %s", strings.Join(got, "|"), want)
	}
	if !strings.Contains(rows[4].comment, "[RFC4380] [RFC8190]") {
		t.Fatalf("comment of a multi-line cell: %q", rows[4].comment)
	}
	if _, err := parse(strings.NewReader("Address Block,Name\r\n10.0.0.0/8,x\r\n")); err == nil {
		t.Fatal("a file without the flag columns was accepted")
	}
}
