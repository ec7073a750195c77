package smsgateway

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"time"
)

// Config is the backend's section of the agent's --backend-config file.
type Config struct {
	// URL of the app's local server, e.g. http://127.0.0.1:8080.
	URL string `json:"url"`
	// Username and Password (or a file holding it) of the local server, as
	// the app's Home tab shows them.
	Username     string `json:"username"`
	Password     string `json:"password,omitempty"`
	PasswordFile string `json:"password_file,omitempty"`
	// WebhookListen is where the agent's webhook receiver listens
	// (default 127.0.0.1:8787: the app runs on the same phone).
	WebhookListen string `json:"webhook_listen,omitempty"`
	// WebhookURL is what the app calls; default http://<webhook_listen>/smsgateway.
	// The app accepts only https:// URLs, or http://127.0.0.1 ones.
	WebhookURL string `json:"webhook_url,omitempty"`
	// SigningKey (or a file holding it) is the app's Settings → Webhooks →
	// Signing Key; every webhook is checked against it.
	SigningKey     string `json:"signing_key,omitempty"`
	SigningKeyFile string `json:"signing_key_file,omitempty"`
	// SIMs are the phone's SIM slots (1-based), e.g. [1, 2]; empty: one.
	SIMs []int `json:"sims,omitempty"`
	// RegisterWebhooks makes Start register WebhookURL with the app for the
	// events the backend needs (idempotently).
	RegisterWebhooks bool `json:"register_webhooks,omitempty"`
	// PollInterval is how long after sending the backend first asks the app
	// for a message's state when no delivery webhook came ("2m" default;
	// "0s" turns polling off). It backs off up to an hour.
	PollInterval string `json:"poll_interval,omitempty"`
}

// Defaults.
const (
	DefaultURL           = "http://127.0.0.1:8080"
	DefaultWebhookListen = "127.0.0.1:8787"
	DefaultWebhookPath   = "/smsgateway"
	DefaultPollInterval  = 2 * time.Minute
	minPollInterval      = 5 * time.Second
)

// settings is a validated Config.
type settings struct {
	base         *url.URL
	username     string
	password     string
	listen       string
	webhookURL   string
	webhookPath  string
	signingKey   string
	sims         []int
	register     bool
	pollInterval time.Duration // 0: no polling
	warnings     []string      // things that work but probably are not what the user wants
}

// validate checks c and fills in defaults. Errors name the setting.
func (c Config) validate() (*settings, error) {
	s := &settings{register: c.RegisterWebhooks}
	raw := c.URL
	if raw == "" {
		raw = DefaultURL
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("smsgateway: url must be the app's local server address, like %s", DefaultURL)
	}
	if u.User != nil {
		return nil, errors.New("smsgateway: url must not hold credentials: use username and password")
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawQuery, u.Fragment = "", ""
	s.base = u

	if c.Username == "" {
		return nil, errors.New("smsgateway: username is required (shown in the app under Local Server)")
	}
	s.username = c.Username
	if s.password, err = secret("password", c.Password, c.PasswordFile); err != nil {
		return nil, err
	}
	if s.signingKey, err = secret("signing_key", c.SigningKey, c.SigningKeyFile); err != nil {
		return nil, err
	}

	s.listen = c.WebhookListen
	if s.listen == "" {
		s.listen = DefaultWebhookListen
	}
	host, port, err := net.SplitHostPort(s.listen)
	if err != nil || port == "" {
		return nil, fmt.Errorf("smsgateway: webhook_listen must be host:port, like %s", DefaultWebhookListen)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		s.warnings = append(s.warnings, "webhook_listen is not a loopback address: the webhook receiver is reachable from the network (signatures are still checked)")
	}

	s.webhookURL = c.WebhookURL
	if s.webhookURL == "" {
		s.webhookURL = "http://" + s.listen + DefaultWebhookPath
	}
	wu, err := url.Parse(s.webhookURL)
	if err != nil || (wu.Scheme != "http" && wu.Scheme != "https") || wu.Host == "" {
		return nil, errors.New("smsgateway: webhook_url must be an http:// or https:// URL the app can call")
	}
	s.webhookPath = wu.Path
	if s.webhookPath == "" {
		s.webhookPath = "/"
	}
	// The app (WebHooksService.replace, v1.68.0) refuses http:// URLs whose
	// host is not exactly 127.0.0.1, except in its "insecure" build.
	if wu.Scheme == "http" && wu.Hostname() != "127.0.0.1" {
		s.warnings = append(s.warnings, "webhook_url is http:// with a host other than 127.0.0.1: the app's release build refuses it")
	}

	seen := map[int]bool{}
	for _, n := range c.SIMs {
		if n < 1 || n > 8 {
			return nil, fmt.Errorf("smsgateway: sims: slot %d is not between 1 and 8", n)
		}
		if seen[n] {
			return nil, fmt.Errorf("smsgateway: sims: slot %d listed twice", n)
		}
		seen[n] = true
		s.sims = append(s.sims, n)
	}

	switch c.PollInterval {
	case "":
		s.pollInterval = DefaultPollInterval
	default:
		d, err := time.ParseDuration(c.PollInterval)
		if err != nil || d < 0 {
			return nil, fmt.Errorf("smsgateway: poll_interval %q is not a duration like \"2m\" (\"0s\" turns polling off)", c.PollInterval)
		}
		if d != 0 && d < minPollInterval {
			return nil, fmt.Errorf("smsgateway: poll_interval must be at least %v (or 0s to turn polling off)", minPollInterval)
		}
		s.pollInterval = d
	}
	return s, nil
}

// secret returns an inline value or the first line of a file; exactly one
// of them must be given. The file must not be readable by others.
func secret(name, inline, file string) (string, error) {
	switch {
	case inline != "" && file != "":
		return "", fmt.Errorf("smsgateway: give %s or %s_file, not both", name, name)
	case inline != "":
		return inline, nil
	case file == "":
		return "", fmt.Errorf("smsgateway: %s (or %s_file) is required", name, name)
	}
	fi, err := os.Stat(file)
	if err != nil {
		return "", fmt.Errorf("smsgateway: %s_file: %w", name, err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("smsgateway: %s_file %s is readable by others (mode %v): chmod 600 it", name, file, fi.Mode().Perm())
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("smsgateway: %s_file: %w", name, err)
	}
	v := strings.TrimRight(strings.SplitN(string(b), "\n", 2)[0], "\r")
	if v == "" {
		return "", fmt.Errorf("smsgateway: %s_file %s is empty", name, file)
	}
	return v, nil
}
