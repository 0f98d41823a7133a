/**
 * The names of a store's files and directories. The engine spells them once, in
 * `crates/cairn-core/src/layout.rs`; TypeScript takes them from the binding and never spells them.
 */
import { nativeModule } from './native.js';

export const LAYOUT = Object.freeze(nativeModule.layout());
