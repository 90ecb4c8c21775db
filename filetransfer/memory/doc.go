// Package memory is an in-memory filetransfer.Store for tests: objects live in
// a map, links are signed like the folder store's and served by Handler.
// Unlike the other stores it holds whole objects in memory.
package memory
