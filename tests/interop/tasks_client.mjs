// The TypeScript SDK's client driving MCP tasks (protocol 2025-11-25) against naive-mcp.
// usage: node tasks_client.mjs '<plan JSON>'
//   plan: {"clients": {"<name>": {"stdio": {"command", "args", "env"}} | {"http": {"url", "bearer"}}},
//          "timeoutMs": <each request's own timeout>,
//          "steps": [{"client": "<name>", "do": "<action>", ...}]}
//   actions: tools (tools/list: each tool's execution), capabilities, call (plain tools/call),
//            stream (client.experimental.tasks.callToolStream: every message it yields),
//            start (a task-augmented call; the task only), get, result, list, cancel (by "taskId",
//            "$last" for the last task started), until (tasks/get until "status" or a
//            statusMessage containing "messageContains"), raw (any request: "method", "params").
// Prints one JSON line per step: {"step": i, "do": action, ...what it got}, errors as
// {"error": {"code", "message"}}; a step's failure does not stop the plan.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { CallToolResultSchema, ResultSchema } from "@modelcontextprotocol/sdk/types.js";

const plan = JSON.parse(process.argv[2]);
const options = { timeout: plan.timeoutMs ?? 60000 };
const clients = {};
for (const [name, spec] of Object.entries(plan.clients)) {
  const transport = spec.stdio
    ? new StdioClientTransport({ ...spec.stdio, stderr: "inherit" })
    : new StreamableHTTPClientTransport(new URL(spec.http.url), {
        requestInit: { headers: spec.http.bearer ? { Authorization: `Bearer ${spec.http.bearer}` } : {} },
      });
  const client = new Client({ name: `naive-mcp-tasks-${name}`, version: "1.0.0" });
  await client.connect(transport);
  clients[name] = client;
}

const errorOf = (error) => ({ code: error?.code ?? null, message: String(error?.message ?? error) });
let last = null;
const taskIdOf = (step) => (step.taskId === "$last" || step.taskId === undefined ? last : step.taskId);

async function run(step) {
  const client = clients[step.client ?? Object.keys(clients)[0]];
  const tasks = client.experimental.tasks;
  const params = { name: step.tool, arguments: step.arguments ?? {} };
  switch (step.do) {
    case "capabilities":
      return { capabilities: client.getServerCapabilities(), protocol: client.transport?.protocolVersion ?? null };
    case "tools":
      return { tools: (await client.listTools(undefined, options)).tools.map((t) => ({ name: t.name, execution: t.execution ?? null })) };
    case "call":
      return { result: await client.callTool(params, CallToolResultSchema, options) };
    case "stream": {
      const messages = [];
      for await (const message of tasks.callToolStream(params, CallToolResultSchema, { ...options, ...(step.task ? { task: step.task } : {}) })) {
        if (message.type === "taskCreated") last = message.task.taskId;
        messages.push(message.type === "error" ? { type: "error", error: errorOf(message.error) } : message);
      }
      return { messages };
    }
    case "start": {
      const created = await client.request(
        { method: "tools/call", params: { ...params, task: step.task ?? {} } },
        ResultSchema.passthrough(),
        options,
      );
      last = created.task?.taskId ?? last;
      return { created };
    }
    case "get":
      return { task: await tasks.getTask(taskIdOf(step), options) };
    case "until": {
      for (;;) {
        const task = await tasks.getTask(taskIdOf(step), options);
        const message = task.statusMessage ?? "";
        if (task.status === step.status || (step.messageContains && message.includes(step.messageContains))) {
          return { task };
        }
        if (["completed", "failed", "cancelled"].includes(task.status)) return { task, missed: true };
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
    case "result":
      return { result: await tasks.getTaskResult(taskIdOf(step), CallToolResultSchema, options) };
    case "list":
      return { tasks: (await tasks.listTasks(undefined, options)).tasks };
    case "cancel":
      return { task: await tasks.cancelTask(taskIdOf(step), options) };
    case "raw":
      return { result: await client.request({ method: step.method, params: step.params }, ResultSchema.passthrough(), options) };
    default:
      throw new Error(`unknown action ${step.do}`);
  }
}

for (const [index, step] of plan.steps.entries()) {
  let outcome;
  try {
    outcome = await run(step);
  } catch (error) {
    outcome = { error: errorOf(error) };
  }
  console.log(JSON.stringify({ step: index, do: step.do, ...outcome }));
}
for (const client of Object.values(clients)) await client.close();
