// The MCP TypeScript SDK v2 client (@modelcontextprotocol/client) with the official tasks extension
// client (@modelcontextprotocol/ext-tasks), on protocol 2026-07-28, against naive-mcp over
// streamable HTTP: the tasks extension (io.modelcontextprotocol/tasks, SEP-2663) as its authors'
// own client drives it.
// usage: node ext_tasks_client.mjs '<plan JSON>'
//   plan: {"url": "<the /mcp endpoint>", "clients": {"<name>": {"bearer", "tasks": <false: the
//          client does not declare the extension>}}, "timeoutMs",
//          "steps": [{"client": "<name>", "do": "<action>", ...}]}
//   actions: capabilities (the server's, and the negotiated protocol); call (session.callTool, then
//            its settled outcome); start (session.callTool: whether it became a task, and its id;
//            the execution is kept); settle (the started execution's outcome); cancel (the started
//            execution's cancel); plain (client.callTool, the SDK's own path, with its timeout);
//            get, cancelTask (a raw tasks/get or tasks/cancel of "taskId", "$last" for the last task).
// Prints one JSON line per step: {"step": i, "do": action, ...what it got}, errors as
// {"error": {"code", "message"}}; a step's failure does not stop the plan.
import { Client, StreamableHTTPClientTransport } from "@modelcontextprotocol/client";
import { createTaskSessionFromClient } from "@modelcontextprotocol/ext-tasks/client";

const VERSION = "2026-07-28";
const TASKS = "io.modelcontextprotocol/tasks";
const plan = JSON.parse(process.argv[2]);
const timeout = plan.timeoutMs ?? 60000;

// The raw path ext-tasks needs for task wire shapes the SDK's codecs do not know: one POST, its
// answer read as JSON or as the SSE stream the server may answer with.
function rawDispatchFor(bearer) {
  let next = 1;
  return async (request, options) => {
    const body = { jsonrpc: "2.0", id: `raw-${next++}`, ...request };
    // The routing header (2026-07-28): the tool's name on tools/call, the task's id on tasks/*.
    const routed = body.method === "tools/call" ? body.params?.name : body.params?.taskId;
    const response = await fetch(plan.url, {
      method: "POST",
      headers: {
        "Content-Type": "application/json",
        Accept: "application/json, text/event-stream",
        "MCP-Protocol-Version": VERSION,
        "Mcp-Method": body.method,
        ...(typeof routed === "string" ? { "Mcp-Name": routed } : {}),
        ...(bearer ? { Authorization: `Bearer ${bearer}` } : {}),
      },
      body: JSON.stringify(body),
      signal: options?.signal,
    });
    const text = await response.text();
    const messages = (response.headers.get("content-type") ?? "").includes("text/event-stream")
      ? text.split(/\r?\n/).filter((line) => line.startsWith("data:")).map((line) => JSON.parse(line.slice(5)))
      : [JSON.parse(text)];
    const answer = messages.find((message) => message.id === body.id && ("result" in message || "error" in message));
    if (answer === undefined) throw new Error(`no answer to ${body.method} (HTTP ${response.status}): ${text.slice(0, 300)}`);
    return "error" in answer ? { kind: "error", error: answer.error } : { kind: "result", result: answer.result };
  };
}

const sessions = {};
for (const [name, { bearer, tasks = true }] of Object.entries(plan.clients)) {
  const capabilities = tasks ? { extensions: { [TASKS]: {} } } : {};
  const clientInfo = { name: `naive-mcp-ext-tasks-${name}`, version: "1.0.0" };
  const client = new Client(clientInfo, { capabilities, versionNegotiation: { mode: { pin: VERSION } } });
  const transport = new StreamableHTTPClientTransport(new URL(plan.url), {
    requestInit: { headers: bearer ? { Authorization: `Bearer ${bearer}` } : {} },
  });
  await client.connect(transport, { timeout });
  const rawDispatch = rawDispatchFor(bearer);
  const session = tasks
    ? createTaskSessionFromClient(client, {
        endpointId: `naive-mcp-${name}`,
        rawDispatch,
        v2RequestFraming: { protocolVersion: client.getNegotiatedProtocolVersion(), clientInfo, clientCapabilities: capabilities },
      })
    : null;
  sessions[name] = { client, session, rawDispatch, capabilities, clientInfo };
}

const errorOf = (error) => ({ code: error?.code ?? null, message: String(error?.message ?? error) });
let lastTaskId = null;
let started = null;
const taskIdOf = (step) => (step.taskId === "$last" || step.taskId === undefined ? lastTaskId : step.taskId);

function outcomeOf(outcome) {
  if (outcome.status === "completed") return { status: "completed", result: outcome.result };
  if (outcome.status === "failed") return { status: "failed", error: errorOf(outcome.error) };
  return { status: outcome.status };
}

function raw(entry, method, params) {
  const framed = {
    method,
    params: {
      ...params,
      _meta: {
        "io.modelcontextprotocol/protocolVersion": VERSION,
        "io.modelcontextprotocol/clientInfo": entry.clientInfo,
        "io.modelcontextprotocol/clientCapabilities": entry.capabilities,
      },
    },
  };
  return entry.rawDispatch(framed);
}

async function run(step) {
  const entry = sessions[step.client ?? Object.keys(sessions)[0]];
  switch (step.do) {
    case "capabilities":
      return { capabilities: entry.client.getServerCapabilities(), protocol: entry.client.getNegotiatedProtocolVersion() };
    case "call": {
      const execution = await entry.session.callTool(step.tool, step.arguments ?? {});
      const { outcome } = await execution.settle();
      return { kind: execution.kind, outcome: outcomeOf(outcome) };
    }
    case "start": {
      started = await entry.session.callTool(step.tool, step.arguments ?? {});
      lastTaskId = started.handle?.taskId ?? lastTaskId;
      return { kind: started.kind, taskId: started.handle?.taskId ?? null };
    }
    case "settle": {
      const { outcome } = await started.settle();
      return { outcome: outcomeOf(outcome) };
    }
    case "cancel":
      await started.cancel();
      return { cancelled: true };
    case "plain":
      return { result: await entry.client.callTool({ name: step.tool, arguments: step.arguments ?? {} }, { timeout }) };
    case "get":
      return { answer: await raw(entry, "tasks/get", { taskId: taskIdOf(step) }) };
    case "cancelTask":
      return { answer: await raw(entry, "tasks/cancel", { taskId: taskIdOf(step) }) };
    default:
      throw new Error(`unknown action ${step.do}`);
  }
}

for (const [index, step] of plan.steps.entries()) {
  let line;
  try {
    line = { step: index, do: step.do, ...(await run(step)) };
  } catch (error) {
    line = { step: index, do: step.do, error: errorOf(error) };
  }
  process.stdout.write(`${JSON.stringify(line)}\n`);
}
for (const { session, client } of Object.values(sessions)) {
  await session?.close?.();
  await client.close();
}
