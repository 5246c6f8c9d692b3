/**
 * A small event emitter: `on`, `off`, `once`. A listener that throws does not
 * stop the others or the client; the error is reported on the console.
 * @module
 */

/** @template {Record<string, any>} Events */
export class Emitter {
  /** @type {Map<keyof Events, Set<(event: any) => void>>} */
  #listeners = new Map();

  /**
   * Calls `listener` with each event named `name` until `off`.
   * @template {keyof Events} K
   * @param {K} name
   * @param {(event: Events[K]) => void} listener
   * @returns {() => void} a function that removes the listener
   */
  on(name, listener) {
    let set = this.#listeners.get(name);
    if (!set) this.#listeners.set(name, (set = new Set()));
    set.add(listener);
    return () => this.off(name, listener);
  }

  /**
   * @template {keyof Events} K
   * @param {K} name
   * @param {(event: Events[K]) => void} listener
   */
  off(name, listener) {
    this.#listeners.get(name)?.delete(listener);
  }

  /**
   * Calls `listener` with the next event named `name` only.
   * @template {keyof Events} K
   * @param {K} name
   * @param {(event: Events[K]) => void} listener
   * @returns {() => void}
   */
  once(name, listener) {
    const off = this.on(name, (event) => {
      off();
      listener(event);
    });
    return off;
  }

  /**
   * @template {keyof Events} K
   * @param {K} name
   * @param {Events[K]} event
   * @protected
   */
  emit(name, event) {
    const set = this.#listeners.get(name);
    if (!set) return;
    for (const listener of [...set]) {
      try {
        listener(event);
      } catch (error) {
        console.error(`ferrocast: a "${String(name)}" listener threw`, error);
      }
    }
  }
}
