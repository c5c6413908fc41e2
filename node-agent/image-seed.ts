// `image-seed`: run by the image build in a throw-away container of the image it just built, whose
// file system is then committed as the node image. Each seeder prepares under SEED.dir what every
// node would otherwise do at its own start; the build gives the container a tmpfs at SEED.work to
// work in. A seeder is one entry in SEEDERS.

import { seedPreloadedImages } from './containerd-seed.js';
import { seedDatastore } from './datastore-seed.js';
import { log } from './log.js';

export interface Seeder {
  /** What it seeds, for the log and for a failure's one line. */
  what: string;
  seed(): Promise<void>;
}

export const SEEDERS: Seeder[] = [
  { what: 'preloaded images', seed: seedPreloadedImages },
  { what: 'the datastore', seed: seedDatastore },
];

export async function runImageSeed(seeders: Seeder[] = SEEDERS): Promise<void> {
  for (const seeder of seeders) {
    const started = performance.now();
    try {
      await seeder.seed();
    } catch (error) {
      throw new Error(`seeding ${seeder.what}: ${(error as Error).message}`, { cause: error });
    }
    log(`seeded ${seeder.what} in ${((performance.now() - started) / 1000).toFixed(1)}s`);
  }
}
