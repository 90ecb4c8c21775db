package main

// oursWebhook would build sign and verify on the webhook package, which is
// not on main yet. The code is ready in ours_webhook.go, excluded by its "//go:build ignore"
// line: once the package has landed, delete that line and this file.
func oursWebhook(secret string) (webhookOps, error) {
	return webhookOps{}, errNotLanded
}
