/**
 * Simple ExportCatalogs: a fixed map of names to backends. A volume manager can implement
 * ExportCatalog itself; the server only calls `list()` and `get()`.
 */
import type { BlockBackend, ExportCatalog } from './backend.js';

export interface ExportEntry {
  name: string;
  backend: BlockBackend;
  description?: string;
}

export class StaticCatalog implements ExportCatalog {
  private readonly entries = new Map<string, ExportEntry>();

  constructor(entries: ExportEntry[]) {
    for (const e of entries) {
      if (this.entries.has(e.name)) throw new Error(`duplicate export name ${JSON.stringify(e.name)}`);
      this.entries.set(e.name, e);
    }
  }

  list(): Array<{ name: string; description?: string }> {
    return [...this.entries.values()].map(({ name, description }) => (description === undefined ? { name } : { name, description }));
  }

  get(name: string): BlockBackend | undefined {
    return this.entries.get(name)?.backend;
  }
}

/** One backend as the default export "" (what `nbd://host:port` with no name opens). */
export function singleExport(backend: BlockBackend, description?: string): StaticCatalog {
  return new StaticCatalog([{ name: '', backend, description }]);
}
