// Calls from the view to Python: anywidget's `invoke` (the counterpart of @command in
// mri_widgets/widgets/base.py). Python answers {result, buffer_paths} with every array of the
// result as a binary buffer, or {error}.
//
// anywidget >= 0.9 hands `experimental.invoke` to render(); we use it. A front end whose anywidget
// runtime predates it (or that does not pass `experimental`, as some custom widget managers such
// as Colab's may not) gets the same wire protocol from `sendCommand` below: a custom message
// {id, kind: "anywidget-command", name, msg} answered by {id, kind: "anywidget-command-response",
// response}. Custom messages work in Colab's widget manager (only buffers of the initial state
// are dropped there), so both paths reach Python.
import { decodeTree, putBuffers } from "./codec.js";

let counter = 0;

/** anywidget's invoke protocol over custom messages (for front ends without experimental.invoke). */
export function sendCommand(model, name, msg, { signal, buffers = [] } = {}) {
  const id = `mri-${Date.now()}-${++counter}`;
  return new Promise((resolve, reject) => {
    function handler(reply, bufs) {
      if (!reply || reply.id !== id) return;
      model.off("msg:custom", handler);
      resolve([reply.response, bufs || []]);
    }
    if (signal) {
      if (signal.aborted) { reject(signal.reason); return; }
      signal.addEventListener("abort", () => { model.off("msg:custom", handler); reject(signal.reason); });
    }
    model.on("msg:custom", handler);
    model.send({ id, kind: "anywidget-command", name, msg }, undefined, buffers);
  });
}

function timeoutSignal(ms) {
  if (typeof AbortSignal !== "undefined" && typeof AbortSignal.timeout === "function") return AbortSignal.timeout(ms);
  const c = new AbortController();
  setTimeout(() => c.abort(new Error("timeout")), ms);
  return c.signal;
}

/**
 * Call the Python method `name` (decorated with @command) with keyword arguments `args`;
 * resolves with its decoded result (arrays as {data, shape, dtype}).
 * The default timeout is 2 minutes, not anywidget's 3 s: commands may run the model.
 */
export async function invoke(model, experimental, name, args = {}, { timeout = 120000 } = {}) {
  const signal = timeoutSignal(timeout);
  const call = experimental && typeof experimental.invoke === "function"
    ? (n, m, o) => experimental.invoke(n, m, o)
    : (n, m, o) => sendCommand(model, n, m, o);
  let response, buffers;
  try {
    [response, buffers] = await call(name, args, { signal });
  } catch (e) {
    if (signal.aborted) throw new Error(`${name} timed out after ${Math.round(timeout / 1000)} s`);
    throw e;
  }
  if (!response || typeof response !== "object") throw new Error(`${name}: no answer from Python`);
  if (response.error) throw new Error(response.error);
  const holder = putBuffers({ result: response.result }, response.buffer_paths, buffers || []);
  return decodeTree(holder.result);
}
