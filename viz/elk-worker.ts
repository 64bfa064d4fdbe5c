/** elkjs in a web worker served by the controller: the page asks it for layouts. */
import ELK from 'elkjs/lib/elk-api.js';
import type { ElkLike } from './chart-layout.js';

let elk: ElkLike | null = null;

export function layoutEngine(): ElkLike {
  elk ??= new ELK({ workerUrl: '/viz/elk-worker.js' }) as unknown as ElkLike;
  return elk;
}
