// The services the interop tests call through the proxy. Every answer names the server instance that gave
// it ("v1:..."), so a test sees where the proxy routed each call.
namespace go echo

// EchoError is a declared exception: its REPLY carries field 1 of the result struct, not field 0.
exception EchoError {
  1: string why
}

service Echo {
  // echo answers "<version>:<msg>".
  string echo(1: string msg)
  // header answers "<version>:<value>" of a request header the server read ("" when absent): THeader and
  // TTHeader carry them, framed and unframed transports do not.
  string header(1: string key)
  // notify is a oneway call: the server records msg and answers nothing.
  oneway void notify(1: string msg)
  // fail always throws EchoError{why: "<version>:<msg>"}.
  string fail(1: string msg) throws (1: EchoError err)
}

// Calc is served next to Echo behind a TMultiplexedProcessor, so its calls are named "Calc:add".
service Calc {
  // add answers a + b.
  i64 add(1: i64 a, 2: i64 b)
}
