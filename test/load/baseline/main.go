// Command baseline is the floor the load test compares the gateway with.
// By default it is a bare net/http reverse proxy (httputil.ReverseProxy)
// doing nothing but forwarding, flushing streams at once, with the same
// transport settings as the gateway. With --raw it is the least a Go proxy
// can do per request: see raw.go.
package main

import (
	"flag"
	"log"
	"net/http"
	"net/http/httputil"
	"net/url"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:19102", "address to listen on")
	upstream := flag.String("upstream", "http://127.0.0.1:19100", "where to forward")
	raw := flag.Bool("raw", false, "forward HTTP/1.1 bytes on raw connections instead of net/http")
	flag.Parse()
	u, err := url.Parse(*upstream)
	if err != nil {
		log.Fatal(err)
	}
	if *raw {
		log.Fatal(serveRaw(*listen, u.Host))
	}
	p := httputil.NewSingleHostReverseProxy(u)
	p.Transport = &http.Transport{DisableCompression: true, MaxIdleConns: 1024, MaxIdleConnsPerHost: 256}
	p.FlushInterval = -1
	log.Fatal(http.ListenAndServe(*listen, p))
}
