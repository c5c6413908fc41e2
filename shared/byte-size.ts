// Sizes as people write them: "20G", "512MiB", "1.5T", or a plain number of bytes. Every unit is a
// power of 1024, with or without "i" and "B": "20G", "20GB" and "20GiB" are the same size.

const UNITS: Record<string, number> = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 };

export function parseByteSize(text: string): number {
  const match = /^(\d+(?:\.\d+)?)\s*(?:([KMGT])(?:i?B)?|B)?$/i.exec(text.trim());
  if (!match) throw new Error(`"${text}" is not a size: write bytes or a number with K, M, G or T`);
  const bytes = Math.floor(Number(match[1]) * UNITS[(match[2] ?? '').toUpperCase()]!);
  if (!Number.isSafeInteger(bytes)) throw new Error(`"${text}" is too large`);
  return bytes;
}
