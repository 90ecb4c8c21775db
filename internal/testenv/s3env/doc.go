// Package s3env gives tests an S3 bucket of their own behind the real
// aws-sdk-go-v2 client: an in-process gofakes3 server, or the S3-compatible
// store at S3_ENDPOINT when that is set (credentials from AWS_ACCESS_KEY_ID
// and AWS_SECRET_ACCESS_KEY, region from AWS_REGION, default us-east-1).
//
// The client uses path-style addressing and an endpoint override, and asks for
// checksums only when an operation requires them: newer SDKs otherwise send
// aws-chunked bodies with CRC32 trailers that fakes may not decode.
//
// gofakes3 does not check credentials. The fake here sits behind a small
// check that answers 403 InvalidAccessKeyId, the way S3 does, to requests
// signed with an access key other than the environment's, so tests of refused
// credentials behave alike against the fake and a real store.
package s3env
