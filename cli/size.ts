/** Parse a byte size like "10G", "512M", "4096" (binary units: K = 1024). */
export function parseSizeBytes(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)(?:i?B)?\s*$/i.exec(text);
  if (!m) throw new Error(`not a size: "${text}" (expected a number with an optional K, M, G, T or P suffix, e.g. 10G)`);
  const unit = 1024 ** ' KMGTP'.indexOf((m[2] || ' ').toUpperCase());
  const bytes = Math.round(Number(m[1]) * unit);
  if (!Number.isSafeInteger(bytes) || bytes <= 0) throw new Error(`size out of range: "${text}"`);
  if (bytes % 512 !== 0) throw new Error(`size must be a multiple of 512 bytes: "${text}" is ${bytes} bytes`);
  return bytes;
}
