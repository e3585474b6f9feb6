// Ananke's "Kore" menu in JupyterLab, for the instructors and teaching assistants of a
// course: Kore's home page ("Course management") and each course they teach, current
// course first, each opened in a new browser tab; the same commands in the palette.
//
// Who gets the menu is decided by the lab's server (route ananke/kore of the server
// extension ananke_hub.lab.extension, which asks Kore with the lab's hub token): the browser
// only draws what the server sends. Students get {"instructor": false} and no menu.
// If Kore cannot be asked, the lab works on without the menu; the reason goes to the
// browser's console.

import { ICommandPalette } from '@jupyterlab/apputils';
import { URLExt } from '@jupyterlab/coreutils';
import { IMainMenu } from '@jupyterlab/mainmenu';
import { ServerConnection } from '@jupyterlab/services';
import { MenuSvg } from '@jupyterlab/ui-components';

const PLUGIN_ID = '@ananke/lab-kore:plugin';
const CATEGORY = 'Kore';
const COMMANDS = {
  home: 'ananke-kore:open-home',
  course: 'ananke-kore:open-course'
};
// After the lab's own menus (Tabs is 500) and before Settings (999) and Help (1000).
const MENU_RANK = 600;

/** The server extension's answer: {instructor, kore_url, courses: [...]}. */
async function fetchKoreEntry() {
  const settings = ServerConnection.makeSettings();
  const url = URLExt.join(settings.baseUrl, 'ananke', 'kore');
  const response = await ServerConnection.makeRequest(url, {}, settings);
  let body = null;
  try {
    body = await response.json();
  } catch (error) {
    body = null;
  }
  if (!response.ok) {
    const message = body && body.message ? body.message : `HTTP ${response.status}`;
    throw new Error(message);
  }
  if (!body || typeof body.kore_url !== 'string' || !Array.isArray(body.courses)) {
    throw new Error('the answer of ananke/kore is not what this menu expects');
  }
  return body;
}

/** Kore's pages open in a tab of their own: they are the hub's, not the lab's. */
function openInNewTab(url) {
  window.open(url, '_blank', 'noopener');
}

function addKoreEntry(app, mainMenu, palette, entry) {
  const courses = new Map(entry.courses.map(course => [course.course_id, course]));

  app.commands.addCommand(COMMANDS.home, {
    label: args => (args.isPalette ? 'Open Kore (course management)' : 'Course management'),
    caption: 'Open Kore, where you manage your courses, in a new browser tab',
    execute: () => openInNewTab(entry.kore_url)
  });
  app.commands.addCommand(COMMANDS.course, {
    label: args => {
      const course = courses.get(args.courseId);
      const title = course ? course.title : String(args.courseId);
      return args.isPalette ? `Open ${title} in Kore` : title;
    },
    caption: args => {
      const course = courses.get(args.courseId);
      const current = course && course.current ? ' (the course you opened last)' : '';
      return `Open this course's page in Kore in a new browser tab${current}`;
    },
    isEnabled: args => courses.has(args.courseId),
    execute: args => {
      const course = courses.get(args.courseId);
      if (course) {
        openInNewTab(course.url);
      }
    }
  });

  const menu = new MenuSvg({ commands: app.commands });
  menu.id = 'jp-mainmenu-ananke-kore';
  menu.title.label = 'Kore';
  menu.addItem({ command: COMMANDS.home });
  if (entry.courses.length > 0) {
    menu.addItem({ type: 'separator' });
  }
  for (const course of entry.courses) {
    menu.addItem({ command: COMMANDS.course, args: { courseId: course.course_id } });
  }
  mainMenu.addMenu(menu, true, { rank: MENU_RANK });

  if (palette) {
    // isPalette: the labels say what the command does, out of the menu's context.
    palette.addItem({ command: COMMANDS.home, category: CATEGORY, args: { isPalette: true } });
    for (const course of entry.courses) {
      palette.addItem({
        command: COMMANDS.course,
        category: CATEGORY,
        args: { courseId: course.course_id, isPalette: true }
      });
    }
  }
}

const plugin = {
  id: PLUGIN_ID,
  description: 'The Kore menu for instructors: course management in Kore, one item per course.',
  autoStart: true,
  requires: [IMainMenu],
  optional: [ICommandPalette],
  activate: (app, mainMenu, palette) => {
    // Not awaited: the lab must not wait for Kore to start.
    fetchKoreEntry()
      .then(entry => {
        if (entry.instructor) {
          addKoreEntry(app, mainMenu, palette, entry);
          console.debug(`Ananke: Kore menu added (${entry.courses.length} courses)`);
        } else {
          console.debug('Ananke: no Kore menu, you teach no course on this hub');
        }
      })
      .catch(error => {
        console.warn(`Ananke: no Kore menu, Kore could not be asked: ${error.message}`);
      });
  }
};

export default plugin;
