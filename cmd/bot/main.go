// Command nightona is the Nightona bot: it takes prompts from chat (the web console, Slack,
// Discord), runs Claude Code for each thread in a sandbox, and streams back what it does.
// Configuration is by environment variables; a .env file in the working folder is read too.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/joho/godotenv"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], envWithDotenv(), os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "nightona:", err)
		os.Exit(1)
	}
}

// envWithDotenv returns a getenv that reads the process environment first and .env second.
func envWithDotenv() func(string) string {
	file, err := godotenv.Read(".env")
	if err != nil && !os.IsNotExist(err) {
		fmt.Fprintln(os.Stderr, "nightona: ignoring .env:", err)
	}
	return func(k string) string {
		if v, ok := os.LookupEnv(k); ok {
			return v
		}
		return file[k]
	}
}
