package connector

import (
	"context"
	"net/http"
	"net/url"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
)

// A streamed file (see streamUpload and streamDownload) keeps its request
// to the homeserver open as long as the phone's link takes to carry it, so
// it does not run on the appservice client, which gives up on any request
// after 180 s. It runs on a client without that cap (same transport), and
// is bounded instead by transferDeadline.

// transferFloor is the slowest link a file is allowed: two minutes plus
// the time the file takes at this rate, then the transfer is cut (and
// retried by whoever waits for it).
const transferFloor = 64 << 10 // bytes per second

// transferDeadline bounds the transfer of a file of size bytes.
func transferDeadline(size int64) time.Duration {
	return 2*time.Minute + time.Duration(size/transferFloor)*time.Second
}

// streamHTTP is the appservice's HTTP client without its overall timeout.
func (c *Connector) streamHTTP() *http.Client {
	c.streamOnce.Do(func() {
		base := c.status.AS.HTTPClient
		c.streamClient = &http.Client{Transport: base.Transport, Jar: base.Jar}
	})
	return c.streamClient
}

// uploadStreamed is mautrix's UploadMedia for a body read once: one
// attempt, on the streaming client.
func (c *Connector) uploadStreamed(ctx context.Context, cli *mautrix.Client, req mautrix.ReqUploadMedia) (*mautrix.RespMediaUpload, error) {
	u, err := url.Parse(cli.BuildURL(mautrix.MediaURLPath{"v3", "upload"}))
	if err != nil {
		return nil, err
	}
	if req.FileName != "" {
		q := u.Query()
		q.Set("filename", req.FileName)
		u.RawQuery = q.Encode()
	}
	var resp mautrix.RespMediaUpload
	_, err = cli.MakeFullRequest(ctx, mautrix.FullRequest{
		Method: http.MethodPost, URL: u.String(), Headers: http.Header{"Content-Type": {req.ContentType}},
		RequestBody: req.Content, RequestLength: req.ContentLength, ResponseJSON: &resp,
		MaxAttempts: 1, Client: c.streamHTTP(),
	})
	return &resp, err
}

// downloadStreamed is mautrix's Download on the streaming client; the
// caller reads and closes the body.
func (c *Connector) downloadStreamed(ctx context.Context, cli *mautrix.Client, mxc id.ContentURI) (*http.Response, error) {
	_, resp, err := cli.MakeFullRequestWithResp(ctx, mautrix.FullRequest{
		Method: http.MethodGet, URL: cli.BuildURL(mautrix.ClientURLPath{"v1", "media", "download", mxc.Homeserver, mxc.FileID}),
		DontReadResponse: true, MaxAttempts: 1, Client: c.streamHTTP(),
	})
	return resp, err
}
