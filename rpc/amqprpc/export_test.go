package amqprpc

import "net"

// LocalAddr exposes the server's current connection address to tests.
func (s *Server) LocalAddr() net.Addr { return s.localAddr() }
