/** What every evaluation section gets: where to work, where charts go, how to report progress. */
export interface EvalContext {
  repo: string;
  /** Scratch space for volumes, mounts and files; removed at the end. */
  workDir: string;
  /** fio runtime per job, seconds. */
  seconds: number;
  progress(message: string): void;
  /** Write an SVG next to the report (docs/eval/NAME). */
  chart(name: string, svg: string): void;
}
