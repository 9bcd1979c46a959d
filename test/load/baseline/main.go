// Command baseline is the floor the load test compares the gateway with: a
// bare net/http reverse proxy (httputil.ReverseProxy) doing nothing but
// forwarding, flushing streams at once, with the same transport settings.
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
	flag.Parse()
	u, err := url.Parse(*upstream)
	if err != nil {
		log.Fatal(err)
	}
	p := httputil.NewSingleHostReverseProxy(u)
	p.Transport = &http.Transport{DisableCompression: true, MaxIdleConns: 1024, MaxIdleConnsPerHost: 256}
	p.FlushInterval = -1
	log.Fatal(http.ListenAndServe(*listen, p))
}
