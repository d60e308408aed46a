// Ask Python for data on demand: counterpart of MRIWidget._answer_rpc.
import { decodeTree, putBuffers } from "./codec.js";

let counter = 0;

/** Call the Python method `name` (decorated with @rpc) and resolve with its decoded result. */
export function rpc(model, name, args = {}, { timeout = 120000 } = {}) {
  const id = `${Date.now()}-${++counter}`;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { model.off("msg:custom", onMsg); reject(new Error(`${name} timed out`)); }, timeout);
    function onMsg(msg, buffers) {
      if (!msg || msg.type !== "rpc_reply" || msg.id !== id) return;
      clearTimeout(timer);
      model.off("msg:custom", onMsg);
      if (msg.error) { reject(new Error(msg.error)); return; }
      const holder = putBuffers({ result: msg.result }, msg.buffer_paths, buffers || []);
      resolve(decodeTree(holder.result));
    }
    model.on("msg:custom", onMsg);
    model.send({ type: "rpc", id, name, args });
  });
}
