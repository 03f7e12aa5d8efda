// A local SQS-compatible server for development and tests: goaws v0.4.5 (the version the Go module
// proxy serves) behind a listen address of our choosing. goaws's own command always listens on
// 0.0.0.0; this one serves the same router on -listen (the project uses a loopback address).
// Build with `go install` from this folder (scripts/lib.sh, ensure_goaws_bin).
//
// goaws keeps queues in memory: a restart starts empty, and the queues of -config are created at
// start. What it does and does not emulate of FIFO queues is in docs/CONTRACTS.md ("Domain events").
package main

import (
	"flag"
	"net/http"
	"os"
	"time"

	"github.com/Admiral-Piett/goaws/app/conf"
	"github.com/Admiral-Piett/goaws/app/gosqs"
	"github.com/Admiral-Piett/goaws/app/router"
	log "github.com/sirupsen/logrus"
)

func main() {
	config := flag.String("config", "", "goaws YAML configuration (required)")
	env := flag.String("env", "Local", "environment section of the configuration")
	listen := flag.String("listen", "127.0.0.1:9324", "address to listen on")
	flag.Parse()
	if *config == "" {
		// goaws would otherwise search the whole working directory for a goaws.yaml
		log.Fatal("-config is required")
	}
	log.SetFormatter(&log.JSONFormatter{})
	log.SetOutput(os.Stdout)
	log.SetLevel(log.WarnLevel)
	conf.LoadYamlConfig(*config, *env)
	go gosqs.PeriodicTasks(1*time.Second, make(chan struct{}))
	log.Warnf("goaws listening on %s", *listen)
	log.Fatal(http.ListenAndServe(*listen, router.New()))
}
