-- wrk script: a stateless 2026-07-28 tools/call of `echo`, the request of the
-- mcp bench's stateless wire (BENCHMARKS.md, "MCP round trip"). Against a
-- running `toolhost serve --tools build/tools/echo.toml --http 127.0.0.1:PORT`:
--   wrk -t1 -c64 -d6s -s cli/benches/stateless.lua http://127.0.0.1:PORT/mcp
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.headers["Mcp-Protocol-Version"] = "2026-07-28"
wrk.headers["Mcp-Method"] = "tools/call"
wrk.headers["Mcp-Name"] = "echo"
wrk.body = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hello, sandbox"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"bench","version":"0"},"io.modelcontextprotocol/clientCapabilities":{}}}}'
