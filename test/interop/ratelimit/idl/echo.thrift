// The service the rate limit tests call through the proxy.
namespace go echo

service Echo {
  // echo answers msg. The MetaRouter's global rate limit selects it.
  string echo(1: string msg)
  // ping answers msg too; no global rate limit selects it.
  string ping(1: string msg)
}
