// Starts a real `s5vec serve` on a fresh data directory and a free port, for the tests.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, existsSync, readFileSync, openSync, closeSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");

/** The s5vec executable: $S5VEC_BIN, else the repo's .venv (what `make install` creates). */
export function s5vecBin() {
  const bin = process.env.S5VEC_BIN ?? join(REPO, ".venv", "bin", "s5vec");
  if (!existsSync(bin)) throw new Error(`${bin} is missing: run \`make install\` (or set S5VEC_BIN)`);
  return bin;
}

function freePort() {
  return new Promise((ok, fail) => {
    const server = createServer();
    server.on("error", fail);
    server.listen(0, "127.0.0.1", () => {
      const { port } = /** @type {import("node:net").AddressInfo} */ (server.address());
      server.close(() => ok(port));
    });
  });
}

/**
 * `s5vec serve` as a child process; `stop()` ends it with SIGTERM, `restart()` starts it
 * again on the same data directory and port, `close()` stops it and removes the directory.
 * @param {{env?: Record<string, string>}} [options]
 */
export async function startDaemon({ env = {} } = {}) {
  const dir = mkdtempSync(join(tmpdir(), "s5vec-js-"));
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const logPath = join(dir, "daemon.log");
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("S5VEC_") || k === "S5VEC_BIN"));
  let proc = null;
  let exited = null;

  async function launch() {
    const log = openSync(logPath, "a");
    exited = null;
    const child = spawn(s5vecBin(), ["serve", "--data-dir", join(dir, "data"), "--port", String(port)], {
      cwd: REPO, env: { ...clean, ...env }, stdio: ["ignore", log, log],
    });
    closeSync(log);
    proc = child;
    const orphan = () => child.kill("SIGKILL"); // never outlive the test process
    process.on("exit", orphan);
    child.on("exit", (code, signal) => { exited = code ?? signal; process.off("exit", orphan); });
    const deadline = Date.now() + 60_000;
    while (true) {
      if (exited !== null) throw new Error(`daemon exited (${exited}):\n${readFileSync(logPath, "utf8").slice(-3000)}`);
      try {
        const response = await fetch(`${url}/ready`);
        if (response.status === 200) return;
      } catch { /* not listening yet */ }
      if (Date.now() > deadline) {
        child.kill("SIGKILL");
        throw new Error(`daemon not ready in 60 s:\n${readFileSync(logPath, "utf8").slice(-3000)}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  async function stop() {
    if (proc && exited === null) {
      const child = proc;
      const done = new Promise((r) => child.once("exit", r));
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
      await done;
      clearTimeout(timer);
    }
    return exited;
  }

  try {
    await launch();
  } catch (error) {
    rmSync(dir, { recursive: true, force: true });
    throw error;
  }
  return {
    url, port, dir,
    log: () => readFileSync(logPath, "utf8"),
    /** SIGTERM and wait for the exit (SIGKILL after 20 s): the exit status. */
    stop,
    /** Start again on the same data directory and port. */
    restart: launch,
    /** Stop, then remove the data directory: the exit status. */
    async close() {
      const status = await stop();
      rmSync(dir, { recursive: true, force: true });
      return status;
    },
  };
}
