// The TypeScript SDK's MCP client, as an agent framework would use it, over streamable HTTP or SSE.
// usage: node ts_client.mjs <url> <http|sse> <bearer or -> <tool> <arguments JSON>
// Prints {"tools": [...names], "result": <CallToolResult>} as one JSON line.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { SSEClientTransport } from "@modelcontextprotocol/sdk/client/sse.js";

const [url, kind, bearer, tool, args] = process.argv.slice(2);
const headers = bearer && bearer !== "-" ? { Authorization: `Bearer ${bearer}` } : {};
const transport =
  kind === "sse"
    ? new SSEClientTransport(new URL(url), {
        requestInit: { headers },
        eventSourceInit: { fetch: (input, init) => fetch(input, { ...init, headers: { ...init?.headers, ...headers } }) },
      })
    : new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers } });

const client = new Client({ name: "naive-mcp-interop", version: "1.0.0" });
await client.connect(transport);
const tools = (await client.listTools()).tools.map((t) => t.name);
const result = await client.callTool({ name: tool, arguments: JSON.parse(args) });
console.log(JSON.stringify({ tools, result }));
await client.close();
