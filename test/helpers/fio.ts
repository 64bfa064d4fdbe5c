/**
 * fio's JSON report. fio's nbd engine prints "fio: connected to NBD server" (and verify
 * notes) on stdout before the JSON, so parse from the first line that opens an object.
 */
export interface FioJobStats {
  io_bytes: number;
  total_ios: number;
  /** Submission to completion, ns. */
  lat_ns?: { min: number; max: number; mean: number };
}

export interface FioJob {
  error: number;
  read: FioJobStats;
  write: FioJobStats;
}

export function fioJobs(stdout: string): FioJob[] {
  const start = stdout.search(/^\{/m);
  if (start < 0) throw new Error(`fio printed no JSON report:\n${stdout.slice(0, 2000)}`);
  return (JSON.parse(stdout.slice(start)) as { jobs: FioJob[] }).jobs;
}
