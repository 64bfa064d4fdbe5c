/**
 * The visualizer page's files, served by the controller: viz/index.html, viz/style.css,
 * viz/main.ts bundled by esbuild on first request (esbuild works in its own process, so the
 * controller's event loop only waits), and elkjs's layout worker. No build output in the
 * repository, nothing fetched from outside: the page's Content-Security-Policy allows only this
 * origin.
 */
import { readFile } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const vizDir = fileURLToPath(new URL('../viz/', import.meta.url));
const require = createRequire(import.meta.url);

/** Only this origin: scripts, the layout worker, styles, the event stream. `blob:` is for saving a recorded run. */
export const pageSecurityPolicy =
  "default-src 'none'; script-src 'self'; worker-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data: blob:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

let bundle: Promise<string> | null = null;

/** viz/main.ts and what it imports, as one ES module (built once per process). */
export function bundleClient(): Promise<string> {
  bundle ??= (async () => {
    const esbuild = await import('esbuild');
    const result = await esbuild.build({
      entryPoints: [`${vizDir}main.ts`],
      bundle: true,
      write: false,
      format: 'esm',
      platform: 'browser',
      target: 'es2022',
      tsconfig: `${vizDir}tsconfig.json`,
      sourcemap: 'inline',
      logLevel: 'silent',
    });
    return result.outputFiles[0].text;
  })();
  bundle.catch(() => (bundle = null));
  return bundle;
}

const staticFiles: Record<string, { file: string; type: string }> = {
  '/': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/index.html': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/viz/style.css': { file: 'style.css', type: 'text/css; charset=utf-8' },
};

/** Serve the page's files; false when the request is not for one of them. */
export function servePage(req: IncomingMessage, res: ServerResponse): boolean {
  if (req.method !== 'GET' && req.method !== 'HEAD') return false;
  const path = (req.url ?? '/').split('?')[0];
  const headers = { 'cache-control': 'no-store', 'content-security-policy': pageSecurityPolicy, 'x-content-type-options': 'nosniff' };
  const send = (body: string, type: string) => {
    res.writeHead(200, { ...headers, 'content-type': type, 'content-length': Buffer.byteLength(body) });
    res.end(req.method === 'HEAD' ? undefined : body);
  };
  const fail = (err: unknown) => {
    if (res.headersSent) return res.destroy();
    res.writeHead(500, { 'content-type': 'text/plain' });
    res.end(`visualizer page unavailable: ${(err as Error).message}\n`);
  };
  if (path === '/viz/app.js') {
    bundleClient().then((js) => send(js, 'text/javascript; charset=utf-8'), fail);
    return true;
  }
  if (path === '/favicon.ico') {
    res.writeHead(204).end();
    return true;
  }
  if (path === '/viz/elk-worker.js') {
    // elkjs's own web worker: the page lays out the statecharts in it.
    readFile(require.resolve('elkjs/lib/elk-worker.min.js'), 'utf8').then((text) => send(text, 'text/javascript; charset=utf-8'), fail);
    return true;
  }
  const entry = staticFiles[path];
  if (!entry) return false;
  readFile(`${vizDir}${entry.file}`, 'utf8').then((text) => send(text, entry.type), fail);
  return true;
}
